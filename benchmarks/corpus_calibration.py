"""How the demo corpus' cell types differ, next to how real ones do (the calibration's check).

Real: scanpy's bundled pbmc68k_reduced (700 PBMCs, 765 highly variable genes; raw counts
recovered as round(expm1(raw.X) * n_counts / 1e4)), labels bulk_labels. Simulated: the demo's
expression model (cellfate.simulate), one sample of every type, QC-clean cells. Same statistic on
both (cellfate.simulate.calibration.de_summary): per type vs the rest, the share of detected
genes with |log2FC| >= 1, the fraction of those up, and |log2FC| quantiles.

    PYTHONPATH=src .venv/bin/python benchmarks/corpus_calibration.py [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from cellfate.simulate.calibration import de_summary
from cellfate.simulate.corpus import corpus_model, simulate_sample
from cellfate.simulate.expression import CELL_TYPES


def real() -> pd.DataFrame:
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    X = adata.raw.X.toarray() if hasattr(adata.raw.X, "toarray") else np.asarray(adata.raw.X)
    counts = np.round(np.expm1(X) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4)
    library = adata.obs["n_counts"].to_numpy()  # the whole transcriptome's total, not the 765 genes'
    return de_summary(counts, adata.obs["bulk_labels"].astype(str).to_numpy(), library=library)


def simulated(seed: int, n_genes: int = 2000, n_cells: int = 1400) -> pd.DataFrame:
    types = sorted(CELL_TYPES)
    model = corpus_model(types, n_genes, seed)
    adata = simulate_sample(model, "calibration", types, n_cells, seed)
    ok = (adata.obs["sim_quality"] == "ok").to_numpy()
    return de_summary(adata.X[ok].toarray(), adata.obs["cell_type"].astype(str).to_numpy()[ok])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    for name, table in (("real (pbmc68k_reduced)", real()), (f"simulated (seed {args.seed})", simulated(args.seed))):
        print(f"== {name}")
        print(table.round(2).to_string(index=False))
        cols = ["de_share", "up_fraction", "abs_log2fc_median", "abs_log2fc_q90"]
        print("range:", ", ".join(f"{c} {table[c].min():.2f}-{table[c].max():.2f}" for c in cols))


if __name__ == "__main__":
    main()
