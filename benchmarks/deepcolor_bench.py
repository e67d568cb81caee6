"""Our DeepCOLOR beside the original ``deepcolor==0.0.6`` on the same simulated tissue and epochs.

    bash benchmarks/setup_deepcolor_venv.sh          # once: benchmarks/.venv-deepcolor
    .venv/bin/python benchmarks/deepcolor_bench.py   # --grid 20 --cells 1200 --genes 500 --epochs 100 100

Each fit runs in its own process (the original in its own venv) and reports its wall time and
peak memory (ru_maxrss); both are scored by the same code: per-type map correlation (each type's
share of every spot vs its true share; the mean p_mat of its cells vs its true abundance beside
it), and AUROC / Spearman of the type-pair colocalization against the truth. Ours runs twice:
with early stopping (the default) and for exactly the given epochs. Printed as a table and as ratios original / ours (time, memory) and ours - original
(quality). Not part of ``make test``: it takes minutes.

``--tissue cells --seeds 5`` runs the cell-level tissue (:func:`cellfate.simulate.tissue.simulate_cell_tissue`,
cells whose expression carries their home) over several seeds: ours, the original and a plain
expression-match baseline on the same matrices, scored per cell (mapped x Spearman and spread for
the gradient type, sub-state AUROC) and per type (spot type share vs the true share).

``--chain N`` runs the environment chain (DeepCOLOR -> colocalization -> conditioned dynamics)
on N seeds of each control; ``--simulator points`` on the held-out point-process tissue
(:mod:`cellfate.simulate.tissue_points`) instead of :mod:`cellfate.simulate.environment`.

The same file is the original's runner (``--run-original``), executed by the deepcolor venv's
python: that part imports nothing from cellfate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ORIGINAL_PYTHON = HERE / ".venv-deepcolor" / "bin" / "python"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_original(data: Path, out: Path, epochs: tuple[int, int], threads: int) -> None:
    """In the deepcolor venv: fit the original, save p_mat and map2sp, report time and memory."""
    import anndata
    import torch
    from deepcolor import workflow

    torch.set_num_threads(threads)
    d = np.load(data, allow_pickle=False)
    sc_adata = anndata.AnnData(X=d["cells"].astype(np.float32))
    sc_adata.layers["count"] = sc_adata.X.copy()
    sp_adata = anndata.AnnData(X=d["spots"].astype(np.float32))
    sp_adata.layers["count"] = sp_adata.X.copy()
    start = time.perf_counter()
    sc_adata, sp_adata = workflow.estimate_spatial_distribution(
        sc_adata, sp_adata, str(out / "original_params.pt"), layer_name="count",
        first_epoch=epochs[0], second_epoch=epochs[1], device="cpu")
    seconds = time.perf_counter() - start
    np.save(out / "original_p_mat.npy", np.asarray(sc_adata.obsm["p_mat"], dtype=np.float32))
    np.save(out / "original_map_total.npy", np.asarray(sc_adata.obsm["map2sp"]).sum(1))
    print(json.dumps({"fit_seconds": seconds, "peak_mb": peak_mb()}))


def run_ours(data: Path, out: Path, epochs: tuple[int, int], threads: int, early_stopping: bool, tag: str,
             type_pcs: int = 0) -> None:
    """Our model on the same matrices, with the demo's training settings."""
    import anndata as ad
    import torch

    from cellfate.spatial.model import DeepColor, DeepColorConfig, p_mat_from_map2sp
    from cellfate.spatial.train import TrainConfig

    torch.set_num_threads(threads)
    d = np.load(data, allow_pickle=False)
    cells, spots = ad.AnnData(X=d["cells"].astype(np.float32)), ad.AnnData(X=d["spots"].astype(np.float32))
    cells.var_names = spots.var_names = [f"g{i}" for i in range(cells.n_vars)]
    if type_pcs:
        cells.obs["cell_type"] = d["labels"]
    cfg = DeepColorConfig(n_type_pcs=type_pcs, train=TrainConfig(epochs_sc=epochs[0], epochs_map=epochs[1],
                                                                 batch_size=128, lr=3e-3,
                                            early_stopping=early_stopping, patience=20))
    start = time.perf_counter()
    model = DeepColor.fit(cells, spots, cfg)
    seconds = time.perf_counter() - start
    map2sp = model.map2sp(model.map_inputs(cells))
    np.save(out / f"{tag}_p_mat.npy", p_mat_from_map2sp(map2sp).astype(np.float32))
    np.save(out / f"{tag}_map_total.npy", map2sp.sum(1))
    epochs_run = {p: sum(1 for h in model.history if h["phase"].startswith(p)) for p in ("phase 1", "phase 2")}
    print(json.dumps({"fit_seconds": seconds, "peak_mb": peak_mb(), "epochs_run": epochs_run}))


def child(python: str | Path, args: list[str]) -> dict:
    """Run one fit in its own process; its last stdout line is its JSON report."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([str(python), str(Path(__file__).resolve()), *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def score(p_mat: np.ndarray, map_total: np.ndarray, labels: np.ndarray, spots_uns: dict, abundance: np.ndarray) -> dict:
    from cellfate.spatial import validation
    from cellfate.spatial.colocalization import type_colocalization
    from cellfate.spatial.model import type_distributions

    from cellfate.spatial.model import type_shares_from_p

    types, pairs, truth = validation.truth_frames(spots_uns)
    corr = validation.map_correlation(type_shares_from_p(p_mat, map_total, labels),
                                      validation.true_fractions(abundance), types)
    mean_p = validation.map_correlation(type_distributions(p_mat, labels), abundance, types)
    matrix = type_colocalization(p_mat, labels, map_total, 0.05)
    return {"map_correlation": float(corr.mean()), "mean_p_correlation": float(mean_p.mean()),
            **validation.colocalization_agreement(matrix, pairs, truth)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=20)
    parser.add_argument("--cells", type=int, default=1200)
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--epochs", type=int, nargs=2, default=(100, 100))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the matrices and results (default: a temp folder)")
    parser.add_argument("--tissue", choices=("domains", "cells"), default="domains")
    parser.add_argument("--seeds", type=int, default=1, help="with --tissue cells: seeds 0..N-1")
    parser.add_argument("--chain", type=int, default=0, metavar="N",
                        help="the environment chain on N seeds of the positive and the negative control")
    parser.add_argument("--first-seed", type=int, default=0, help="with --chain: seeds K..K+N-1")
    parser.add_argument("--controls", nargs="+", choices=("positive", "negative"), default=["positive", "negative"])
    parser.add_argument("--maps", default=None, help="with --chain: reuse the tissues and DeepCOLOR maps of an "
                        "earlier --chain run's --out folder (the environment analysis alone)")
    parser.add_argument("--placement", choices=("map", "state_blind", "niche"), default=None,
                        help="with --chain: spatial.environment.placement (default: the config's)")
    parser.add_argument("--placement-temperature", type=float, default=None,
                        help="with --chain: spatial.environment.placement_temperature (default: the config's)")
    parser.add_argument("--placement-smoothing", type=float, default=None,
                        help="with --chain: spatial.environment.placement_smoothing (default: the config's)")
    parser.add_argument("--subpopulation", type=float, default=0.0,
                        help="with --chain: EnvironmentSpec.driver_subpopulation (share of the driver's cells that "
                             "alone drive the lineage); the named clusters' purity is reported")
    parser.add_argument("--subpopulation-markers", type=int, default=5,
                        help="with --subpopulation: EnvironmentSpec.subpopulation_markers")
    parser.add_argument("--cluster-space", choices=("latent", "expression"), default=None,
                        help="with --chain and condition clusters: spatial.environment.cluster_space (k-means of the "
                             "partners on DeepCOLOR's X_zl or on 10 PCs of log expression within each type; "
                             "default: the config's)")
    parser.add_argument("--deepcolor", nargs="+", default=[], metavar="KEY=VALUE",
                        help="with --chain: spatial.deepcolor settings (YAML value), e.g. n_type_pcs=5 epochs_map=400")
    parser.add_argument("--env", nargs="+", default=[], metavar="KEY=VALUE",
                        help="with --chain: any other spatial.environment setting (YAML value), e.g. epochs_vae=120")
    parser.add_argument("--only-seeds", type=int, nargs="+", default=None,
                        help="with --chain: these seeds instead of K..K+N-1")
    parser.add_argument("--analysis-seed", type=int, default=None,
                        help="with --chain: spatial.seed of the environment analysis (folds, fits, permutations)")
    parser.add_argument("--no-truth-control", action="store_true",
                        help="with --chain: skip the true-density control (half the time; its columns are then absent)")
    parser.add_argument("--simulator", choices=("environment", "points"), default="environment",
                        help="with --chain: the tissue simulator (environment: cellfate.simulate.environment, on "
                             "which the chain's settings were chosen; points: cellfate.simulate.tissue_points, a "
                             "held-out design of cells as points, disc spots and count-driven fates)")
    parser.add_argument("--run-original", nargs=2, metavar=("DATA", "OUT"))
    parser.add_argument("--run-ours", nargs=3, metavar=("DATA", "OUT", "TAG"))
    parser.add_argument("--no-early-stopping", action="store_true")
    parser.add_argument("--type-pcs", type=int, default=0,
                        help="ours: DeepColorConfig.n_type_pcs (within-type components the map head reads)")
    return parser


def main() -> None:
    args = _parser().parse_args()
    epochs = tuple(args.epochs)
    if args.run_original:
        return run_original(Path(args.run_original[0]), Path(args.run_original[1]), epochs, args.threads)
    if args.run_ours:
        data, out, tag = args.run_ours
        return run_ours(Path(data), Path(out), epochs, args.threads, not args.no_early_stopping, tag, args.type_pcs)

    if args.chain:
        overrides = {k: v for k, v in (("placement", args.placement),
                                       ("placement_temperature", args.placement_temperature),
                                       ("placement_smoothing", args.placement_smoothing),
                                       ("cluster_space", args.cluster_space)) if v is not None}
        import yaml

        overrides.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.env)})
        seeds = args.only_seeds or list(range(args.first_seed, args.first_seed + args.chain))
        return chain_benchmark(seeds, args.out, args.controls, args.maps, overrides, args.no_truth_control,
                               args.analysis_seed, (args.subpopulation, args.subpopulation_markers),
                               {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.deepcolor)},
                               args.simulator)
    if args.tissue == "cells":
        return cell_level_benchmark(args, epochs)

    import pandas as pd

    from cellfate.simulate.tissue import TissueSpec, simulate_tissue

    if not ORIGINAL_PYTHON.exists():
        sys.exit("benchmarks/.venv-deepcolor is missing: run bash benchmarks/setup_deepcolor_venv.sh first")
    out = Path(args.out or tempfile.mkdtemp(prefix="deepcolor_bench_"))
    out.mkdir(parents=True, exist_ok=True)
    spots, cells = simulate_tissue(TissueSpec(grid=(args.grid, args.grid), n_reference_cells=args.cells,
                                              n_genes=args.genes, seed=args.seed))
    keep = (np.asarray(cells.X.sum(0)).ravel() >= 10) & (np.asarray(spots.X.sum(0)).ravel() >= 10)
    data = out / "data.npz"
    np.savez(data, cells=cells.X[:, keep].toarray(), spots=spots.X[:, keep].toarray())
    print(f"data: {cells.n_obs} cells, {spots.n_obs} spots, {keep.sum()} genes; epochs {epochs}; threads {args.threads}")
    common = ["--epochs", *map(str, epochs), "--threads", str(args.threads)]
    runs = {
        "ours (early stopping)": child(sys.executable, ["--run-ours", str(data), str(out), "ours_es", *common]),
        "ours (all epochs)": child(sys.executable, ["--run-ours", str(data), str(out), "ours_fixed", *common,
                                                   "--no-early-stopping"]),
        "original deepcolor 0.0.6": child(ORIGINAL_PYTHON, ["--run-original", str(data), str(out), *common]),
    }
    labels = cells.obs["cell_type"].astype(str).to_numpy()
    files = {"ours (early stopping)": "ours_es", "ours (all epochs)": "ours_fixed", "original deepcolor 0.0.6": "original"}
    rows = []
    for name, report in runs.items():
        p = np.load(out / f"{files[name]}_p_mat.npy")
        total = np.load(out / f"{files[name]}_map_total.npy")
        rows.append({"method": name, "fit_seconds": report["fit_seconds"], "peak_mb": report["peak_mb"],
                     **score(p, total, labels, dict(spots.uns), spots.obsm["true_abundance"])})
    table = pd.DataFrame(rows).set_index("method")
    table.to_csv(out / "results.tsv", sep="\t")
    pd.set_option("display.width", 140)
    print(table.round(3).to_string())
    orig = table.loc["original deepcolor 0.0.6"]
    for name in ("ours (early stopping)", "ours (all epochs)"):
        ours = table.loc[name]
        print(f"{name}: {orig['fit_seconds'] / ours['fit_seconds']:.1f}x faster, "
              f"{orig['peak_mb'] / ours['peak_mb']:.2f}x less memory, "
              f"map correlation {ours['map_correlation'] - orig['map_correlation']:+.3f}, "
              f"colocalization AUROC {ours['colocalization_auroc'] - orig['colocalization_auroc']:+.3f}, "
              f"Spearman {ours['colocalization_spearman'] - orig['colocalization_spearman']:+.3f} (ours - original)")
    print(f"results: {out / 'results.tsv'}")


def cell_level_scores(p_mat: np.ndarray, map_total: np.ndarray, spots, cells) -> dict:
    """Cell-level metrics and the type-level map (spot type share vs true share) of one map."""
    from cellfate.spatial import validation
    from cellfate.spatial.cell_level import cell_level_metrics
    from cellfate.spatial.model import type_shares

    truth = dict(spots.uns["cell_level_truth"])
    out = cell_level_metrics(p_mat, spots.obsm["spatial"], cells.obs, truth["gradient_type"], truth["substate_type"])
    shares = type_shares(p_mat * map_total[:, None], cells.obs["cell_type"])
    corr = validation.map_correlation(shares, validation.true_fractions(spots.obsm["true_abundance"]),
                                      [str(t) for t in spots.uns["cell_types"]])
    rows = p_mat / np.linalg.norm(p_mat, axis=1, keepdims=True)
    labels = cells.obs["cell_type"].astype(str).to_numpy()
    cos = [np.median(rows[labels == t] @ (m := rows[labels == t].mean(0)) / np.linalg.norm(m)) for t in np.unique(labels)]
    return {**out, "type_map_correlation": float(corr.mean()), "cosine_to_type_mean": float(np.median(cos))}


def cell_level_benchmark(args: argparse.Namespace, epochs: tuple[int, int]) -> None:
    """Ours, the original and the expression match on the cell-level tissue, seed by seed."""
    import pandas as pd

    from cellfate.simulate.tissue import CellTissueSpec, simulate_cell_tissue
    from cellfate.spatial.cell_level import expression_match

    out = Path(args.out or tempfile.mkdtemp(prefix="deepcolor_cells_bench_"))
    out.mkdir(parents=True, exist_ok=True)
    have_original = ORIGINAL_PYTHON.exists()
    if not have_original:
        print("benchmarks/.venv-deepcolor is missing (bash benchmarks/setup_deepcolor_venv.sh): original skipped")
    common = ["--epochs", *map(str, epochs), "--threads", str(args.threads)]
    rows = []
    for seed in range(args.seeds):
        spots, cells = simulate_cell_tissue(CellTissueSpec(grid=(args.grid, args.grid), n_reference_cells=args.cells,
                                                           n_genes=args.genes, seed=seed))
        keep = (np.asarray(cells.X.sum(0)).ravel() >= 10) & (np.asarray(spots.X.sum(0)).ravel() >= 10)
        folder = out / f"seed{seed}"
        folder.mkdir(exist_ok=True)
        data = folder / "data.npz"
        x_cells, x_spots = cells.X[:, keep].toarray(), spots.X[:, keep].toarray()
        np.savez(data, cells=x_cells, spots=x_spots, labels=np.asarray(cells.obs["cell_type"].astype(str), dtype="U"))
        runs = {"ours": ("ours", child(sys.executable, ["--run-ours", str(data), str(folder), "ours", *common,
                                                        "--type-pcs", str(args.type_pcs)]))}
        if have_original:
            runs["original deepcolor 0.0.6"] = ("original", child(ORIGINAL_PYTHON, ["--run-original", str(data),
                                                                                 str(folder), *common]))
        for name, (tag, report) in runs.items():
            p = np.load(folder / f"{tag}_p_mat.npy")
            rows.append({"seed": seed, "method": name, "fit_seconds": report["fit_seconds"],
                         **cell_level_scores(p, np.load(folder / f"{tag}_map_total.npy"), spots, cells)})
        p = expression_match(x_cells, x_spots)
        total = np.asarray(p / np.maximum(p.sum(0, keepdims=True), 1e-30)).sum(1)  # map2sp's row sums
        rows.append({"seed": seed, "method": "expression match (T=0.05)", "fit_seconds": np.nan,
                     **cell_level_scores(p, total, spots, cells)})
        print(pd.DataFrame(rows[-len(runs) - 1:]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "cell_level_results.tsv", sep="\t", index=False)
    summary = table.groupby("method").agg(["mean", "std"]).drop(columns="seed").round(3)
    pd.set_option("display.width", 200)
    print(f"\n{args.seeds} seeds, grid {args.grid}, {args.cells} cells, {args.genes} genes, epochs {epochs}")
    print(summary.to_string())
    ours = table[table.method == "ours"].set_index("seed")
    for other in table.method.unique():
        if other != "ours":
            them = table[table.method == other].set_index("seed")
            print(f"ours - {other}: " + ", ".join(f"{k} {(ours[k] - them[k]).mean():+.3f}" for k in
                                                  ("cell_x_spearman", "cell_x_spread", "substate_auroc",
                                                   "type_map_correlation")))
    passing = ((ours.cell_x_spearman >= 0.6) & (ours.cell_x_spread >= 0.1) & (ours.substate_auroc >= 0.85)
               & (ours.type_map_correlation >= 0.88))
    print(f"ours passes all four cell-level targets in {int(passing.sum())}/{len(passing)} seeds")
    print(f"results: {out / 'cell_level_results.tsv'}")


def simulate_chain_tissue(seed: int, negative: bool, subpopulation: tuple[float, int], simulator: str) -> tuple:
    """(spots, reference, ligand_target) of one control on one seed, from either simulator."""
    gains = {"fate_gain": 0.0, "speed_gain": 0.0} if negative else {}
    if simulator == "points":
        from cellfate.simulate.tissue_points import PointTissueSpec, simulate_point_tissue

        if subpopulation[0] > 0:
            raise SystemExit("--simulator points has no driver sub-population (--subpopulation)")
        return simulate_point_tissue(PointTissueSpec(seed=seed, **gains))
    from cellfate.simulate.environment import EnvironmentSpec, simulate_environment

    return simulate_environment(EnvironmentSpec(seed=seed, driver_subpopulation=subpopulation[0],
                                                subpopulation_markers=subpopulation[1], **gains))


def chain_run(seed: int, negative: bool, folder: Path, cfg: dict, maps: Path | None = None,
              subpopulation: tuple[float, int] = (0.0, 5), simulator: str = "environment") -> dict:
    """One control on one seed: simulate, DeepCOLOR, environment dynamics (with the truth-c control).
    With ``maps``, the tissue and DeepCOLOR's outputs of an earlier run in that folder are reused."""
    from cellfate.io import write_h5ad, write_table
    from cellfate.spatial import pipeline

    folder.mkdir(parents=True, exist_ok=True)
    f = {k: folder / v for k, v in (("cells", "cells.h5ad"), ("p", "p_mat.npy"), ("modes", "modes.tsv"),
                                    ("ligands", "ligands.tsv"), ("spots", "spots.h5ad"))}
    if maps is not None:
        for name in ("cells.h5ad", "p_mat.npy", "lt.tsv", "spots.h5ad"):
            if not (folder / name).exists():
                (folder / name).symlink_to(maps / name)
    else:
        spots, ref, table = simulate_chain_tissue(seed, negative, subpopulation, simulator)
        write_h5ad(spots, f["spots"])
        write_h5ad(ref, folder / "ref.h5ad")
        write_table(table, folder / "lt.tsv", index=True)
        pipeline.deepcolor(folder / "ref.h5ad", f["spots"], folder / "model", f["cells"], f["p"],
                           folder / "mapped.h5ad", cfg)
    space = _cluster_space(f["cells"], cfg, None)
    pipeline.environment(f["cells"], f["p"], folder / "lt.tsv", f["modes"], folder / "genes.tsv", f["ligands"],
                         cfg, spots_h5ad=f["spots"])
    import pandas as pd

    modes = pd.read_csv(f["modes"], sep="\t")
    rows = pipeline.environment_rows(modes, negative=negative)
    ligands = pd.read_csv(f["ligands"], sep="\t")
    rows["true_ligand_rank"] = float(ligands.index[ligands["is_true_ligand"]][0] + 1) if ligands["is_true_ligand"].any() else np.nan
    purity = cluster_purity(folder, cfg, modes, space) if subpopulation[0] > 0 else {}
    return {**rows, **chain_details(modes), **purity, **placement_distances(folder, cfg)}


def _cluster_space(cells_h5ad: Path, cfg: dict, how: str | None) -> np.ndarray:
    """The space the analysis clustered the partners in (``how``: a cluster_space, None: the
    config's), from the package's own function, for the purity columns."""
    import anndata as ad

    from cellfate.spatial import pipeline

    s = pipeline.settings(cfg)
    cells = ad.read_h5ad(cells_h5ad)
    labels = cells.obs[s["cell_type_key"]].astype(str).to_numpy()
    e = {**s["environment"], **({"cluster_space": how} if how else {})}
    partners = list(e["partners"] or [t for t in dict.fromkeys(labels) if t not in e["cells"]])
    part = np.flatnonzero(np.isin(labels, partners))
    return pipeline.cluster_space(cells, part, labels, e, cells_h5ad)


def cluster_purity(folder: Path, cfg: dict, modes, space: np.ndarray | None = None) -> dict:
    """With a driver sub-population and condition ``clusters``: the share of true sub-population
    cells in each of the driver type's clusters (the analysis' own k-means, redone) and in the
    named ones, and the share of the sub-population the named clusters hold."""
    import anndata as ad
    from sklearn.cluster import KMeans

    from cellfate.spatial import pipeline

    s = pipeline.settings(cfg)
    e = s["environment"]
    cells = ad.read_h5ad(folder / "cells.h5ad")
    labels = cells.obs[s["cell_type_key"]].astype(str).to_numpy()
    partners = list(e["partners"] or [t for t in dict.fromkeys(labels) if t not in e["cells"]])
    part = np.flatnonzero(np.isin(labels, partners))
    truth = cells.obs["driver_subpopulation"].to_numpy(dtype=bool)[part]
    first = modes[(modes["condition"] == modes["condition"].iloc[0]) & (modes["mode"] == 1)]
    named = set(first.loc[first["named"], "partner"])
    out, in_named, sub_named = {}, 0, 0
    for name in partners:
        sel = np.flatnonzero(labels[part] == name)
        k = max(1, min(int(e["clusters_per_type"]), len(sel) // 10))
        latent = cells.obsm["X_zl"][part] if space is None else space
        groups = KMeans(n_clusters=k, n_init=4, random_state=cfg["seed"]).fit_predict(latent[sel]) \
            if k > 1 else np.zeros(len(sel), dtype=int)
        for g in range(k):
            members = truth[sel[groups == g]]
            if name == "fibroblast":
                out[f"purity_{name}:{g}"] = float(members.mean())
            if f"{name}:{g}" in named:
                in_named, sub_named = in_named + len(members), sub_named + int(members.sum())
    out["purity_named"] = sub_named / in_named if in_named else np.nan
    out["recall_named"] = sub_named / max(int(truth.sum()), 1)
    return out


def chain_details(modes) -> dict:
    """The analysed condition's named partners, mode-1 p, each partner's column p and mode-1 weight."""
    first = modes[(modes["condition"] == modes["condition"].iloc[0]) & (modes["mode"] == 1)]
    out = {"named": ",".join(first.loc[first["named"], "partner_type"]) or "-",
           "mode1_p": float(first["mode_p_value"].iloc[0])}
    for _, r in first.iterrows():
        out[f"p_{r.partner}"] = float(r.partner_p_value)
        out[f"w_{r.partner}"] = float(r.weight)
        out[f"r2_{r.partner}"] = float(r.state_r2)
    return out


def placement_distances(folder: Path, cfg: dict) -> dict:
    """Mean distance of the lineage cells' placement from their true home: DeepCOLOR's rows of
    p_mat and, with ``placement: state_blind``, the state-blind map (expected distance; distance
    of the expected position)."""
    import anndata as ad

    from cellfate.counts import dense
    from cellfate.spatial import pipeline
    from cellfate.spatial.placement import mean_distance_from_home

    s = pipeline.settings(cfg)
    e = s["environment"]
    cells, spots = ad.read_h5ad(folder / "cells.h5ad"), ad.read_h5ad(folder / "spots.h5ad")
    labels = cells.obs[s["cell_type_key"]].astype(str).to_numpy()
    lineage = np.isin(labels, e["cells"])
    partners = list(e["partners"] or [t for t in dict.fromkeys(labels) if t not in e["cells"]])
    xy = np.asarray(spots.obsm["spatial"], dtype=float)
    home = spots.obs_names.get_indexer(cells.obs["home_spot"].to_numpy()[lineage])
    out = dict(zip(("dist_map", "dist_map_centre"),
                   mean_distance_from_home(np.load(folder / "p_mat.npy")[lineage], xy, home)))
    if e["placement"] == "state_blind":
        dynamics = dense(cells.layers["spliced"][lineage]).sum(0) >= max(1, e["min_counts"])
        p = pipeline.lineage_placement(cells, lineage, labels, partners, dynamics, e, folder / "spots.h5ad", folder,
                                       folder / "p_mat.npy")
        out.update(zip(("dist_state_blind", "dist_state_blind_centre"), mean_distance_from_home(p, xy, home)))
        out.update(condition_truth_agreement(cells, lineage, labels, partners, e, folder, p))
    return out


def condition_truth_agreement(cells, lineage: np.ndarray, labels: np.ndarray, partners: list[str], e: dict,
                              folder: Path, lineage_map: np.ndarray) -> dict:
    """Spearman, per partner, of the analysed condition column (colocalization from the state-blind
    map) with the true partner density at the cell's place: where the chain fails, whether the
    condition or the dynamics test lost the environment."""
    from scipy.stats import spearmanr

    from cellfate.spatial import pipeline

    if "true_partner_density" not in cells.obsm or e["condition"] != "colocalization":
        return {}
    c, names, _ = pipeline.condition_matrix(cells, lineage, labels, partners, e, folder / "p_mat.npy", folder,
                                            0, lineage_map)
    truth = np.asarray(cells.obsm["true_partner_density"][partners], dtype=float)[lineage]
    return {f"rho_{name}": float(spearmanr(c[:, k], truth[:, k])[0]) for k, name in enumerate(names)}


def chain_benchmark(seeds: list[int], out: str | None, controls: list[str], maps: str | None = None,
                    overrides: dict | None = None, no_truth: bool = False, analysis_seed: int | None = None,
                    subpopulation: tuple[float, int] = (0.0, 5), deepcolor: dict | None = None,
                    simulator: str = "environment") -> None:
    """DeepCOLOR -> colocalization -> conditioned dynamics on these seeds of each control (demo settings)."""
    import logging

    import pandas as pd
    import torch
    import yaml

    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    if no_truth:
        _skip_truth_control()
    cfg = yaml.safe_load((HERE.parent / "config" / "config.yaml").read_text())["spatial"]
    cfg["environment"] = {**cfg["environment"], **(overrides or {})}
    cfg["deepcolor"] = {**cfg["deepcolor"], **(deepcolor or {})}
    cfg["seed"] = cfg.get("seed", 42) if analysis_seed is None else analysis_seed
    root = Path(out or tempfile.mkdtemp(prefix="environment_chain_"))
    results = []
    for negative in [c == "negative" for c in controls]:
        for seed in seeds:
            start = time.perf_counter()
            name = f"{'negative' if negative else 'positive'}_{seed}"
            row = chain_run(seed, negative, root / name, cfg, None if maps is None else Path(maps).resolve() / name,
                            subpopulation, simulator)
            results.append({"control": "negative" if negative else "positive", "seed": seed,
                            "seconds": time.perf_counter() - start, **row})
            print(json.dumps(results[-1]), flush=True)
    table = pd.DataFrame(results)
    table.to_csv(root / "chain_results.tsv", sep="\t", index=False)
    pos, neg = table[table.control == "positive"], table[table.control == "negative"]
    if len(pos):
        print(f"positive: driver named (DeepCOLOR c) {int(pos.environment_partner_named.sum())}/{len(pos)}, "
              f"(true c) {int(pos.get('environment_partner_named_truth_c', pos.seed * np.nan).sum())}/{len(pos)}; "
              f"planted ligand in top 3 {int((pos.true_ligand_rank <= 3).sum())}/{len(pos)}")
    if len(neg):
        print(f"negative: nothing named (DeepCOLOR c) {int(neg.environment_negative_nothing_named.sum())}/{len(neg)}, "
              f"(true c) {int(neg.get('environment_negative_nothing_named_truth_c', neg.seed * np.nan).sum())}/{len(neg)}")
    print_chain_table(table)
    print(f"results: {root / 'chain_results.tsv'}")


def print_chain_table(table) -> None:
    """Per seed: named partners, mode 1 p, ligand rank, the driver column's state R^2 and (where
    computed) each condition column's Spearman with the true density at the cell's place."""
    cols = [c for c in ("control", "seed", "named", "mode1_p", "true_ligand_rank", "environment_state_r2_driver",
                        "environment_negative_state_r2_driver") if c in table]
    cols += [c for c in table if c.startswith(("p_", "rho_"))]
    merged = table[cols].copy()
    if "environment_negative_state_r2_driver" in merged:
        merged["environment_state_r2_driver"] = merged.get("environment_state_r2_driver", np.nan)
        merged["environment_state_r2_driver"] = merged["environment_state_r2_driver"].fillna(
            merged.pop("environment_negative_state_r2_driver"))
    print(merged.round(3).to_string(index=False))


def _skip_truth_control() -> None:
    """Benchmark screening only: the true-density control's analysis returns no rows."""
    from cellfate.spatial import pipeline

    analyse = pipeline._analyse

    def without_truth(s, u, c, names, types, condition, *rest):
        if condition == "truth":
            return pipeline.pd.DataFrame(columns=["condition", "mode", "partner", "partner_type", "named"]), []
        return analyse(s, u, c, names, types, condition, *rest)

    pipeline._analyse = without_truth


if __name__ == "__main__":
    main()
