"""How much real cell types differ, measured once on a real labelled count matrix, for the simulator.

The demo corpus must have cell types that differ the way real ones do, or a foundation model
trained on it has nothing to learn (the first demo corpus changed 5% of genes by a N(0, 1) log
fold change plus six markers: its tiny model's held-out loss sat at the unigram entropy and its
embeddings' kNN accuracy at chance). The numbers below were measured with :func:`de_summary` on
scanpy's bundled ``pbmc68k_reduced`` (700 human PBMCs, 10x 3', 765 highly variable genes, raw
counts recovered as ``round(expm1(raw.X) * n_counts / 1e4)``; labels ``bulk_labels``, the seven
types with >= 30 cells): ``benchmarks/corpus_calibration.py`` recomputes them and prints the
simulated corpus' values beside them.

Caveat: the real matrix holds highly variable genes only, so its DE share (0.21-0.31 of
detected genes) is an upper bound for a whole transcriptome; the simulator treats its gene panel
like such a panel.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Share of detected genes with |log2 fold change| >= 1 (type vs the rest), per PBMC type.
PBMC_DE_SHARE = {
    "Dendritic": 0.210, "CD14+ Monocyte": 0.298, "CD19+ B": 0.300, "CD4+/CD25 T Reg": 0.303,
    "CD8+ Cytotoxic T": 0.250, "CD8+/CD45RA+ Naive Cytotoxic": 0.295, "CD56+ NK": 0.314,
}
#: Fraction of those DE genes that are up in the type (the rest are down); range 0.26-0.44.
PBMC_UP_FRACTION = 0.35
#: Quantiles (0, 0.1, ..., 1) of |log2 fold change| of the DE genes, pooled over the seven types.
PBMC_ABS_LOG2FC_QUANTILES = (1.0, 1.13, 1.26, 1.42, 1.62, 1.91, 2.27, 2.67, 3.15, 4.34, 8.51)
#: Close subtypes, measured the same way between two sibling types instead of type vs rest: the
#: pooled CD4+ T labels (95 cells) against the pooled CD8+ T labels (97 cells) of the same matrix.
#: 63 of 613 detected genes have |log2FC| >= 1 (type vs rest: 0.21-0.31); 29% of them are up in
#: the CD4 cells. CD4 itself: +2.3 (detected in 28% of CD4, 2% of CD8 cells); CD8A -2.5, CD8B -2.9.
PBMC_SIBLING_DE_SHARE = 0.103
#: Quantiles (0, 0.1, ..., 1) of |log2 fold change| of those 63 genes.
PBMC_SIBLING_ABS_LOG2FC_QUANTILES = (1.01, 1.07, 1.12, 1.19, 1.32, 1.43, 1.80, 2.22, 2.46, 3.01, 5.31)
#: Standard deviation of the genes' log mean expression (natural log, CP10k) in the same matrix.
PBMC_LOG_MEAN_SD = 1.29


def de_summary(counts: np.ndarray, labels: np.ndarray, min_cells: int = 30, min_detect: float = 0.1,
               library: np.ndarray | None = None) -> pd.DataFrame:
    """Per type (vs all other cells): detected genes, DE share, up fraction, |log2FC| quantiles.

    Counts are normalised to 10,000 per cell (per ``library`` when given: a matrix of selected
    genes must be scaled by the cell's whole-transcriptome total, as measured); a gene counts as detected when >= ``min_detect`` of
    the cells of the type or of the rest express it; DE means |log2((mean_in + 0.1) / (mean_out +
    0.1))| >= 1. The same function measures the real matrix and the simulated corpus.
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(axis=1) if library is None else np.asarray(library, dtype=float)
    norm = counts / np.maximum(total, 1)[:, None] * 1e4
    labels = np.asarray(labels).astype(str)
    rows = []
    for name in pd.Series(labels).value_counts().index:
        inside = labels == name
        if inside.sum() < min_cells or (~inside).sum() < min_cells:
            continue
        detected = ((counts[inside] > 0).mean(0) >= min_detect) | ((counts[~inside] > 0).mean(0) >= min_detect)
        lfc = np.log2((norm[inside].mean(0) + 0.1) / (norm[~inside].mean(0) + 0.1))
        de = detected & (np.abs(lfc) >= 1)
        q = np.quantile(np.abs(lfc[de]), [0.25, 0.5, 0.9]) if de.any() else [np.nan] * 3
        rows.append({
            "cell_type": name, "cells": int(inside.sum()), "detected_genes": int(detected.sum()),
            "de_share": de.sum() / max(detected.sum(), 1), "up_fraction": (de & (lfc > 0)).sum() / max(de.sum(), 1),
            "abs_log2fc_q25": q[0], "abs_log2fc_median": q[1], "abs_log2fc_q90": q[2],
        })
    return pd.DataFrame(rows)


def draw_log2_fold_changes(n_genes: int, de_share: float, rng: np.random.Generator) -> np.ndarray:
    """log2 fold changes of one type's program: ``de_share`` of genes DE, sizes from the PBMC quantiles."""
    fold = np.zeros(n_genes)
    de = rng.random(n_genes) < de_share
    size = np.interp(rng.random(de.sum()), np.linspace(0, 1, len(PBMC_ABS_LOG2FC_QUANTILES)), PBMC_ABS_LOG2FC_QUANTILES)
    sign = np.where(rng.random(de.sum()) < PBMC_UP_FRACTION, 1.0, -1.0)
    fold[de] = sign * size
    return fold


def draw_sibling_fold_changes(n_genes: int, up_weights: np.ndarray, de_share: float, rng: np.random.Generator) -> np.ndarray:
    """log2 fold changes (subtypes x genes) that set sibling subtypes apart, as CD4 from CD8 T cells.

    ``de_share`` of the genes differ; each is up in one subtype (chosen with
    probability ``up_weights``), by a size from the sibling quantiles, and unchanged in the others,
    so any two siblings differ by exactly that size on it.
    """
    weights = np.asarray(up_weights, dtype=float) / np.sum(up_weights)
    de = np.flatnonzero(rng.random(n_genes) < de_share)
    grid = np.linspace(0, 1, len(PBMC_SIBLING_ABS_LOG2FC_QUANTILES))
    size = np.interp(rng.random(len(de)), grid, PBMC_SIBLING_ABS_LOG2FC_QUANTILES)
    owner = rng.choice(len(weights), size=len(de), p=weights)
    fold = np.zeros((len(weights), n_genes))
    fold[owner, de] = size
    return fold
