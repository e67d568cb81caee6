"""DeepCOLOR CPU time vs the original ``deepcolor==0.0.6`` at equal epochs, on real cells.

    bash benchmarks/setup_deepcolor_venv.sh            # once: benchmarks/.venv-deepcolor
    .venv/bin/python benchmarks/deepcolor_speed_bench.py --epochs 100 100
    .venv/bin/python benchmarks/deepcolor_speed_bench.py --scale 50000 100 --epochs 2 2 --skip-original

The tissue is :func:`real_tissue.real_tissue` (real pbmc68k cells pooled into spots in smooth
gradients, the reference held out), not a project simulator. Each fit runs in its own process
with one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``) and reports the CPU seconds
of its fit (its own and its reaped children's: the original's DataLoader workers), wall seconds
and peak RSS. Ours runs with the original's batch sizes (1,000 cells per step in both phases)
so an epoch is the same work, and once more with the demo config's settings. ``--reference N``
resamples the held-out half to N cells (more steps per epoch; still no reference cell in a spot).
The original drops the last incomplete batch of each epoch (``drop_last=True``) after holding out
2% of the cells, so below ~1,020 cells it takes no step at all; at 3,062 cells both take about
one pass over the cells per epoch (3 steps; ours 3 and 4), the fair equal-epoch size. Map quality for
each: per type, Pearson r over spots of the type's share of each spot (its cells' map2sp) with
its true share, and of the mean p_mat of its cells with its true cell count.

``--scale N GRID``: time and peak RSS of our whole ``deepcolor`` rule (fit + chunked outputs) at
N reference cells (resampled) and GRID x GRID spots; the original is not run at that size.
"""

from __future__ import annotations

import argparse
import json
import math
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


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def report(start_cpu: float, start_wall: float, **extra) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"cpu_seconds": cpu_seconds() - start_cpu, "wall_seconds": time.perf_counter() - start_wall,
                      "peak_mb": peak, **extra}))


def run_original(data: Path, out: Path, epochs: tuple[int, int]) -> None:
    """In the deepcolor venv: fit the original, save p_mat and the row sums of map2sp."""
    import anndata
    import torch
    from deepcolor import workflow

    torch.set_num_threads(1)
    d = np.load(data, allow_pickle=False)
    sc_adata = anndata.AnnData(X=d["cells"].astype(np.float32))
    sc_adata.layers["count"] = sc_adata.X.copy()
    sp_adata = anndata.AnnData(X=d["spots"].astype(np.float32))
    sp_adata.layers["count"] = sp_adata.X.copy()
    start_cpu, start_wall = cpu_seconds(), time.perf_counter()
    sc_adata, sp_adata = workflow.estimate_spatial_distribution(
        sc_adata, sp_adata, str(out / "original_params.pt"), layer_name="count",
        first_epoch=epochs[0], second_epoch=epochs[1], device="cpu")
    np.save(out / "original_p_mat.npy", np.asarray(sc_adata.obsm["p_mat"], dtype=np.float32))
    np.save(out / "original_map_total.npy", np.asarray(sc_adata.obsm["map2sp"]).sum(1))
    report(start_cpu, start_wall)


def run_ours(data: Path, out: Path, epochs: tuple[int, int], tag: str, demo: bool) -> None:
    """Our model on the same matrices, fixed epochs; ``demo``: the demo config's batch sizes and lr."""
    import anndata as ad
    import torch

    from cellfate.spatial.model import DeepColor, DeepColorConfig, p_mat_from_map2sp
    from cellfate.spatial.train import TrainConfig

    torch.set_num_threads(1)
    d = np.load(data, allow_pickle=False)
    cells, spots = ad.AnnData(X=d["cells"].astype(np.float32)), ad.AnnData(X=d["spots"].astype(np.float32))
    cells.var_names = spots.var_names = [f"g{i}" for i in range(cells.n_vars)]
    sizes = dict(batch_size=128, lr=3e-3) if demo else dict(batch_size=1000, map_batch_size=1000, lr=1e-3)
    cfg = DeepColorConfig(train=TrainConfig(epochs_sc=epochs[0], epochs_map=epochs[1], early_stopping=False, **sizes))
    start_cpu, start_wall = cpu_seconds(), time.perf_counter()
    model = DeepColor.fit(cells, spots, cfg)
    map2sp = model.map2sp(model.map_inputs(cells))
    np.save(out / f"{tag}_p_mat.npy", p_mat_from_map2sp(map2sp).astype(np.float32))
    np.save(out / f"{tag}_map_total.npy", map2sp.sum(1))
    report(start_cpu, start_wall)


def child(python: str | Path, args: list[str]) -> dict:
    """One fit in its own single-threaded process; its last stdout line is its JSON report."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([str(python), str(Path(__file__).resolve()), *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def map_quality(p_mat: np.ndarray, map_total: np.ndarray, labels: np.ndarray, types: np.ndarray,
                abundance: np.ndarray) -> dict:
    """Mean over types of the share r and the mean-p_mat r (see the module docstring)."""
    from cellfate.spatial import validation
    from cellfate.spatial.model import type_distributions, type_shares_from_p

    names = [str(t) for t in types]
    share = validation.map_correlation(type_shares_from_p(p_mat, map_total, labels),
                                       validation.true_fractions(abundance), names)
    mean_p = validation.map_correlation(type_distributions(p_mat, labels), abundance, names)
    return {"type_share_r": float(share.mean()), "mean_p_r": float(mean_p.mean()),
            "worst_type_share_r": float(share.min())}


def save_inputs(tissue: dict, out: Path) -> Path:
    """The matrices both methods read, over the genes with >= 10 counts in both."""
    keep = (tissue["cells"].sum(0) >= 10) & (tissue["spots"].sum(0) >= 10)
    data = out / "data.npz"
    np.savez(data, cells=tissue["cells"][:, keep], spots=tissue["spots"][:, keep])
    return data


def compare(args: argparse.Namespace) -> None:
    """Ours (original's batch sizes, demo config) and the original on one tissue; ratios printed."""
    import pandas as pd

    from real_tissue import real_tissue

    out = Path(args.out or tempfile.mkdtemp(prefix="deepcolor_speed_"))
    out.mkdir(parents=True, exist_ok=True)
    tissue = real_tissue(args.grid, args.seed, n_reference=args.reference)
    data = save_inputs(tissue, out)
    shapes = np.load(data)["cells"].shape, np.load(data)["spots"].shape
    epochs = [str(e) for e in args.epochs]
    print(f"real tissue seed {args.seed}: {shapes[0][0]} reference cells, {shapes[1][0]} spots, {shapes[0][1]} genes; "
          f"epochs {args.epochs[0]} + {args.epochs[1]}; 1 thread", flush=True)
    n = shapes[0][0]
    print(f"steps per epoch at batch 1000: original {(n - 2 * int(0.01 * n)) // 1000} in both phases (it holds out "
          f"2% and drops the last incomplete batch); ours {math.ceil((n - round(0.05 * n)) / 1000)} (phase 1, 5% "
          f"held out) and {math.ceil(n / 1000)} (phase 2, near-equal batches)", flush=True)
    runs = {"ours (original's batch sizes)": ("ours", sys.executable, ["--run-ours", str(data), str(out), "ours"]),
            "ours (demo config)": ("demo", sys.executable, ["--run-ours", str(data), str(out), "demo", "--demo"])}
    if not args.skip_original:
        runs["original deepcolor 0.0.6"] = ("original", ORIGINAL_PYTHON, ["--run-original", str(data), str(out)])
    rows = []
    for name, (tag, python, cmd) in runs.items():
        result = child(python, [*cmd, "--epochs", *epochs])
        quality = map_quality(np.load(out / f"{tag}_p_mat.npy"), np.load(out / f"{tag}_map_total.npy"),
                              tissue["labels"], tissue["types"], tissue["abundance"])
        rows.append({"method": name, **result, **quality})
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows).set_index("method")
    table.to_csv(out / "speed_results.tsv", sep="\t")
    pd.set_option("display.width", 160)
    print(table.round(3).to_string())
    if "original deepcolor 0.0.6" in table.index:
        orig = table.loc["original deepcolor 0.0.6"]
        for name in ("ours (original's batch sizes)", "ours (demo config)"):
            ours = table.loc[name]
            print(f"{name}: {orig.cpu_seconds / ours.cpu_seconds:.1f}x less CPU time, "
                  f"{orig.wall_seconds / ours.wall_seconds:.1f}x wall, {orig.peak_mb / ours.peak_mb:.2f}x less memory; "
                  f"type share r {ours.type_share_r:.3f} vs {orig.type_share_r:.3f}")
    print(f"results: {out / 'speed_results.tsv'}")


def run_rule(folder: Path, epochs: tuple[int, int]) -> None:
    """In its own process: the whole ``deepcolor`` rule function on the h5ad inputs."""
    import torch

    from cellfate.spatial import pipeline
    from cellfate.spatial.model import DeepColor

    torch.set_num_threads(1)  # the workflow's adaptor does this for a rule; here we call its function

    cfg = {"deepcolor": {"epochs_sc": epochs[0], "epochs_map": epochs[1], "early_stopping": False,
                         "batch_size": 1000, "map_batch_size": 1000}}
    fit_cpu = {}

    class TimedFit(DeepColor):
        @classmethod
        def fit(cls, *args, **kwargs) -> DeepColor:  # the fit's own CPU time, apart from the outputs
            start = cpu_seconds()
            model = DeepColor.fit.__func__(cls, *args, **kwargs)
            fit_cpu["fit_cpu_seconds"] = cpu_seconds() - start
            return model

    pipeline.DeepColor = TimedFit
    start_cpu, start_wall = cpu_seconds(), time.perf_counter()
    pipeline.deepcolor(folder / "ref.h5ad", folder / "spots.h5ad", folder / "model", folder / "cells.h5ad",
                       folder / "p_mat.npy", folder / "mapped.h5ad", cfg)
    report(start_cpu, start_wall, p_mat_mb=(folder / "p_mat.npy").stat().st_size / 2**20, **fit_cpu)


def scale(args: argparse.Namespace) -> None:
    """Time and peak RSS of the rule at N cells x GRID^2 spots (resampled real cells)."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from cellfate.io import write_h5ad
    from real_tissue import real_tissue

    n_cells, grid = args.scale
    folder = Path(args.out or tempfile.mkdtemp(prefix="deepcolor_scale_"))
    folder.mkdir(parents=True, exist_ok=True)
    t = real_tissue(grid, args.seed, n_reference=n_cells)
    genes = pd.Index(t["genes"]).astype(str)
    ref = ad.AnnData(X=sp.csr_matrix(t["cells"]), obs=pd.DataFrame({"cell_type": t["labels"]},
                                                                   index=[f"c{i}" for i in range(len(t["cells"]))]))
    spots = ad.AnnData(X=sp.csr_matrix(t["spots"]), obs=pd.DataFrame(index=[f"s{i}" for i in range(len(t["spots"]))]))
    ref.var_names = spots.var_names = genes
    spots.obsm["spatial"] = t["xy"]
    write_h5ad(ref, folder / "ref.h5ad")
    write_h5ad(spots, folder / "spots.h5ad")
    del t, ref, spots
    result = child(sys.executable, ["--run-rule", str(folder), "--epochs", *map(str, args.epochs)])
    dense_gb = n_cells * grid * grid * 4 / 1e9
    print(f"deepcolor rule, {n_cells} cells x {grid * grid} spots x {len(genes)} genes, epochs "
          f"{args.epochs[0]} + {args.epochs[1]}, 1 thread: {result['cpu_seconds']:.0f} CPU s "
          f"(fit {result.get('fit_cpu_seconds', float('nan')):.0f}), "
          f"{result['wall_seconds']:.0f} s wall, peak RSS {result['peak_mb'] / 1024:.2f} GB "
          f"(one dense cells x spots float32 array: {dense_gb:.2f} GB; p_mat.npy {result['p_mat_mb'] / 1024:.2f} GB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, nargs=2, default=(100, 100))
    parser.add_argument("--out", default=None)
    parser.add_argument("--skip-original", action="store_true")
    parser.add_argument("--reference", type=int, default=None,
                        help="resample the held-out reference to N cells (default: the held-out half as is)")
    parser.add_argument("--scale", type=int, nargs=2, metavar=("CELLS", "GRID"))
    parser.add_argument("--run-original", nargs=2, metavar=("DATA", "OUT"))
    parser.add_argument("--run-ours", nargs=3, metavar=("DATA", "OUT", "TAG"))
    parser.add_argument("--run-rule", metavar="FOLDER")
    parser.add_argument("--demo", action="store_true")
    args = parser.parse_args()
    epochs = tuple(args.epochs)
    if args.run_original:
        return run_original(Path(args.run_original[0]), Path(args.run_original[1]), epochs)
    if args.run_ours:
        return run_ours(Path(args.run_ours[0]), Path(args.run_ours[1]), epochs, args.run_ours[2], args.demo)
    if args.run_rule:
        return run_rule(Path(args.run_rule), epochs)
    sys.path.insert(0, str(HERE))
    return scale(args) if args.scale else compare(args)


if __name__ == "__main__":
    main()
