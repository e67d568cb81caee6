"""How the demo corpus' cell types differ, next to how real ones do (the calibration's check).

Real: scanpy's bundled pbmc68k_reduced (700 PBMCs, 765 highly variable genes; raw counts
recovered as round(expm1(raw.X) * n_counts / 1e4)), labels bulk_labels. Simulated: the demo's
expression model (cellfate.simulate), one sample of every type, QC-clean cells. Same statistic on
both (cellfate.simulate.calibration.de_summary): per type vs the rest, the share of detected
genes with |log2FC| >= 1, the fraction of those up, and |log2FC| quantiles.

Close subtypes (``--siblings``): the same statistic between the pooled CD4+ and CD8+ T labels of
the real matrix and between the simulated CD4+ and CD8+ alpha-beta T cells of one source, and how
well the classification baseline (PCA of log-normalised counts + logistic regression, 5-fold)
tells the two apart in each; for the simulated corpus also the demo's cross-source task (train on
PanglaoDB + Expression Atlas samples, test on the CELLxGENE spleen; all types).

    PYTHONPATH=src .venv/bin/python benchmarks/corpus_calibration.py [--seed 0] \
        [--siblings --seeds 0 1 2 [--activity 0.3 0.6 1.0]]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from cellfate.simulate.calibration import de_summary
from cellfate.simulate.corpus import corpus_model, simulate_sample
from cellfate.simulate.expression import CELL_TYPES

T4, T8 = "CD4-positive, alpha-beta T cell", "CD8-positive, alpha-beta T cell"
DEMO_TISSUES = {"liver": ["hepatocyte", "endothelial cell", "macrophage", T4, T8],
                "lung": ["epithelial cell", "endothelial cell", "fibroblast", "macrophage", "B cell"],
                "spleen": [T4, T8, "B cell", "macrophage", "endothelial cell"]}
DEMO_SAMPLES = [("panglaodb", "SRA900001_SRS900001", "liver", 500), ("panglaodb", "SRA900001_SRS900002", "spleen", 400),
                ("expression_atlas", "E-MTAB-90001", "lung", 500),
                ("cellxgene", "c3f7a2d0-5b1e-4e8a-9d2c-000000000001", "spleen", 400)]


def pbmc_counts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw counts, bulk labels, whole-transcriptome library sizes) of pbmc68k_reduced."""
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    X = adata.raw.X.toarray() if hasattr(adata.raw.X, "toarray") else np.asarray(adata.raw.X)
    counts = np.round(np.expm1(X) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4)
    library = adata.obs["n_counts"].to_numpy()  # the whole transcriptome's total, not the 765 genes'
    return counts, adata.obs["bulk_labels"].astype(str).to_numpy(), library


def real() -> pd.DataFrame:
    counts, labels, library = pbmc_counts()
    return de_summary(counts, labels, library=library)


def baseline_cv_f1(counts, labels: np.ndarray, folds: int = 5) -> float:
    """Macro-F1 of the classify baseline over a stratified k-fold split."""
    import scipy.sparse as sp
    from sklearn.model_selection import StratifiedKFold

    from cellfate.foundation.finetune import baseline_predictions, scores

    classes = sorted(set(labels))
    y = np.searchsorted(classes, labels)
    predicted = np.empty(len(y), dtype=int)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y):
        predicted[test] = baseline_predictions(sp.csr_matrix(counts), train, test, y)
    return scores(labels, np.asarray(classes)[predicted])["macro_f1"]


def real_siblings() -> None:
    counts, labels, library = pbmc_counts()
    group = np.array(["CD4" if x.startswith("CD4+") else "CD8" if x.startswith("CD8+") else "" for x in labels])
    pair = group != ""
    print("== real CD4+ vs CD8+ T labels (pbmc68k_reduced)")
    print(de_summary(counts[pair], group[pair], min_cells=20, library=library[pair]).round(3).to_string(index=False))
    print(f"baseline 5-fold macro-F1 CD4 vs CD8: {baseline_cv_f1(counts[pair], group[pair]):.3f}")


def simulated_siblings(seed: int) -> None:
    """The demo corpus' four samples: sibling DE, within-source CD4/CD8 baseline, cross-source baseline."""
    import scipy.sparse as sp

    from cellfate.foundation.finetune import baseline_predictions, scores

    model = corpus_model(sorted({t for v in DEMO_TISSUES.values() for t in v}), 2000, seed)
    samples = []
    for source, name, tissue, n in DEMO_SAMPLES:
        a = simulate_sample(model, name, DEMO_TISSUES[tissue], n, seed, source=source)
        samples.append((source, a[(a.obs["sim_quality"] == "ok").to_numpy()]))
    X = sp.vstack([a.X for _, a in samples]).tocsr()
    labels = np.concatenate([a.obs["cell_type"].astype(str).to_numpy() for _, a in samples])
    sources = np.concatenate([[s] * a.n_obs for s, a in samples])
    pair = np.flatnonzero(np.isin(labels, [T4, T8]) & (sources == "panglaodb"))
    print(f"== simulated CD4+ vs CD8+ T cells, PanglaoDB samples (seed {seed})")
    print(de_summary(X[pair].toarray(), labels[pair], min_cells=20).round(3).to_string(index=False))
    print(f"baseline 5-fold macro-F1 CD4 vs CD8: {baseline_cv_f1(X[pair], labels[pair]):.3f}")
    classes = sorted(set(labels))
    train, test = np.flatnonzero(sources != "cellxgene"), np.flatnonzero(sources == "cellxgene")
    predicted = baseline_predictions(X, train, test, np.searchsorted(classes, labels))
    result = scores(labels[test], np.asarray(classes)[predicted])
    print(f"baseline cross-source (test: cellxgene, {len(test)} cells, all types): "
          f"accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}")


def simulated(seed: int, n_genes: int = 2000, n_cells: int = 1400) -> pd.DataFrame:
    types = sorted(CELL_TYPES)
    model = corpus_model(types, n_genes, seed)
    adata = simulate_sample(model, "calibration", types, n_cells, seed)
    ok = (adata.obs["sim_quality"] == "ok").to_numpy()
    return de_summary(adata.X[ok].toarray(), adata.obs["cell_type"].astype(str).to_numpy()[ok])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--siblings", action="store_true", help="the close-subtype calibration instead")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--activity", type=float, nargs="+", default=None,
                        help="subtype program activities Beta(a, 1) to try (default: the simulator's)")
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    if args.siblings:
        from cellfate.simulate import expression

        real_siblings()
        for activity in args.activity or [expression.SUBTYPE_ACTIVITY]:
            expression.SUBTYPE_ACTIVITY = activity
            print(f"#### subtype program activity Beta({activity}, 1)")
            for seed in args.seeds:
                simulated_siblings(seed)
        return
    for name, table in (("real (pbmc68k_reduced)", real()), (f"simulated (seed {args.seed})", simulated(args.seed))):
        print(f"== {name}")
        print(table.round(2).to_string(index=False))
        cols = ["de_share", "up_fraction", "abs_log2fc_median", "abs_log2fc_q90"]
        print("range:", ", ".join(f"{c} {table[c].min():.2f}-{table[c].max():.2f}" for c in cols))


if __name__ == "__main__":
    main()
