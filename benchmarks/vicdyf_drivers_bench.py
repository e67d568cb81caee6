"""Planted fate drivers: VICDYF's fluctuation ranking beside CellRank 2's lineage drivers, same velocity.

Setup once: ``benchmarks/setup_cellrank_venv.sh`` (CellRank 2.0.7 in benchmarks/.venv-cellrank).
Then, from the repository root with the project's venv::

    .venv/bin/python benchmarks/vicdyf_drivers_bench.py --seeds 0 1 2

Per simulator (bifurcation, markovmodus, cascade) and seed: VICDYF is fitted once
(cellfate.dynamics.crosscheck.fit); our ranking is cellfate.dynamics.fluctuation.analyse's
contribution toward each fate; CellRank gets our velocity (layers ``velocity`` =
vicdyf_mean_velocity in counts, ``Ms`` = vicdyf_expression in counts), a kNN graph on VICDYF's
latent means, the true terminal cells (the latest 10% of each fate) and ranks genes by the
correlation of their log-normalised expression with each fate's probability
(``compute_lineage_drivers``). Printed side by side: AUROC of the planted drivers of each fate
against all genes, for both methods.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CELLRANK_PYTHON = HERE / ".venv-cellrank" / "bin" / "python"


def absorption_probabilities(transition, terminal: dict[str, np.ndarray]) -> np.ndarray:
    """P(absorbed in each terminal set) from every cell: (I - Q) X = R by a sparse direct solve.

    The fallback when CellRank's own solve refuses. Asked for ``solver="direct"``, CellRank 2.0.7
    printed "Defaulting to 'gmres' solver" here and its result failed its own checks ("24 values
    are negative" on the bifurcation, seed 0; "246 value(s) do not sum to 1" with our learnt
    diffusion's velocity). A sparse direct solve of the same system gives every value >= 0 (the
    smallest 6e-28: reaching one branch from deep inside the other) and rows summing to 1 within
    2e-10; tiny negatives would be clipped.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    t = sp.csr_matrix(transition)
    term = np.concatenate(list(terminal.values()))
    trans = np.setdiff1d(np.arange(t.shape[0]), term)
    q = t[trans][:, trans]
    r = np.column_stack([np.asarray(t[trans][:, cells].sum(1)).ravel() for cells in terminal.values()])
    probs = np.zeros((t.shape[0], len(terminal)))
    probs[trans] = np.asarray(spsolve((sp.eye(len(trans)) - q).tocsc(), r)).reshape(len(trans), -1)
    for col, cells in enumerate(terminal.values()):
        probs[cells, col] = 1.0
    return np.clip(probs, 0.0, None)


def cellrank_worker(h5ad: str, out_tsv: str) -> None:
    """Runs in the CellRank venv: fate probabilities from our velocity, lineage drivers per fate."""
    import anndata as ad
    import cellrank as cr
    import scanpy as sc

    adata = ad.read_h5ad(h5ad)
    fates = [f for f in adata.obs["branch"].cat.categories if f != "progenitor"]
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.neighbors(adata, use_rep="X_vicdyf_zl", n_neighbors=30)
    kernel = cr.kernels.VelocityKernel(adata, xkey="Ms", vkey="velocity").compute_transition_matrix()
    estimator = cr.estimators.GPCCA(kernel)
    late = {}
    for fate in fates:
        cells = adata.obs_names[(adata.obs["branch"] == fate).to_numpy()]
        pt = adata.obs.loc[cells, "pseudotime"]
        late[fate] = list(pt[pt >= pt.quantile(0.9)].index)
    estimator.set_terminal_states(late)
    try:
        estimator.compute_fate_probabilities(solver="direct")
        drivers = estimator.compute_lineage_drivers(lineages=fates)
        solver = "cellrank"
    except ValueError as err:  # round-off below zero: same chain, scipy's solve, CellRank's correlation test
        from cellrank._utils._lineage import Lineage
        from cellrank._utils._utils import _correlation_test

        print(f"CellRank's fate probabilities refused ({err}); solving the same chain with scipy", file=sys.stderr)
        index = {f: adata.obs_names.get_indexer(cells) for f, cells in late.items()}
        probs = absorption_probabilities(kernel.transition_matrix, index)
        drivers = _correlation_test(adata.X, Lineage(probs, names=fates), gene_names=adata.var_names)
        solver = "scipy"
    drivers.assign(solver=solver).to_csv(out_tsv, sep="\t")


def run_cellrank(adata, truth, workdir: Path) -> dict[str, np.ndarray]:
    """Hand our outputs to the CellRank worker; per fate, each gene's correlation with the fate's probability."""
    import anndata as ad
    import pandas as pd

    scale = adata.var["vicdyf_gene_scale"].to_numpy()[None, :]
    out = ad.AnnData(X=np.asarray(adata.layers["spliced"], dtype=np.float32), obs=truth.obs[["pseudotime", "branch"]].copy(),
                     var=pd.DataFrame(index=adata.var_names))
    out.obs["branch"] = out.obs["branch"].astype(str).astype("category")
    out.layers["velocity"] = np.asarray(adata.layers["vicdyf_mean_velocity"]) * scale
    out.layers["Ms"] = np.asarray(adata.layers["vicdyf_expression"]) * scale
    out.obsm["X_vicdyf_zl"] = np.asarray(adata.obsm["X_vicdyf_zl"])
    with tempfile.TemporaryDirectory(dir=workdir) as private:  # two runs side by side must not share files
        path, result = Path(private) / "cellrank_in.h5ad", Path(private) / "cellrank_drivers.tsv"
        out.write_h5ad(path)
        done = subprocess.run([str(CELLRANK_PYTHON), __file__, "--worker", str(path), str(result)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"CellRank failed:\n{done.stderr[-3000:]}")
        table = pd.read_csv(result, sep="\t", index_col=0).loc[adata.var_names]
    scores = {c[: -len("_corr")]: table[c].to_numpy() for c in table.columns if c.endswith("_corr")}
    return scores, str(table["solver"].iloc[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulators", nargs="+", default=["bifurcation", "markovmodus", "cascade"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--genes", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--diffusion", default="posterior", choices=["posterior", "learnt"])
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        cellrank_worker(*args.worker)
        return
    if not CELLRANK_PYTHON.exists():
        raise SystemExit(f"{CELLRANK_PYTHON} is missing: run benchmarks/setup_cellrank_venv.sh first")
    import pandas as pd

    from cellfate.dynamics import crosscheck as cc

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in args.simulators:
        for seed in args.seeds:
            truth, adata, model, _ = cc.fit(kind, seed, n_cells=args.cells, n_genes=args.genes, epochs=args.epochs,
                                              diffusion=args.diffusion)
            ours = cc.driver_metrics(model, adata, truth, cc.FATES[kind], seed)
            theirs, solver = run_cellrank(adata, truth, out)
            for fate in cc.FATES[kind]:
                is_driver = (truth.var["fate_driver"].astype(str) == fate).to_numpy()
                row = {"simulator": kind, "seed": seed, "fate": fate, "n_drivers": int(is_driver.sum()),
                       "genes": adata.n_vars, "cellrank_solver": solver, "vicdyf_auroc": ours[f"drivers:{fate}:auroc"],
                       "cellrank_auroc": cc.driver_auroc(theirs[fate], is_driver),
                       "vicdyf_top10_share": ours[f"drivers:{fate}:top10_share"],
                       "cellrank_top10_share": float((pd.Series(theirs[fate]).rank(ascending=False).to_numpy()
                                                      <= round(0.1 * adata.n_vars))[is_driver].mean())}
                rows.append(row)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / f"vicdyf_drivers_{args.cells}x{args.genes}_e{args.epochs}{args.tag}.tsv", sep="\t", index=False)
    print("\nmeans over seeds and fates:")
    print(table.groupby("simulator", sort=False)[["vicdyf_auroc", "cellrank_auroc", "vicdyf_top10_share",
                                                   "cellrank_top10_share"]].mean().round(3).to_string())


if __name__ == "__main__":
    main()
