"""Per-cell quality control with thresholds from the config, every decision recorded.

Cells are flagged, not deleted: ``obs['filter_pass']`` says whether a cell enters the corpus and
``obs['qc_fail']`` says why not (the first failed check), so the QC figures can show what was
removed. The checks: at least ``min_genes`` detected genes and ``min_counts`` UMIs, at most
``max_pct_mito`` percent mitochondrial counts, not a MAD outlier in log counts or log genes
within its sample (``nmads``), and not a re-hosted duplicate (``is_primary_data`` False).
The original Mouse-Geneformer thresholds are unpublished; the defaults are the field's usual ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
import pandas as pd

from cellfate.errors import CellfateError
from cellfate.genes import mouse_gene_table


@dataclass(frozen=True)
class QCThresholds:
    """Per-cell filters (see the module docstring)."""

    min_genes: int = 200
    min_counts: int = 500
    max_pct_mito: float = 20.0
    nmads: float = 5.0
    min_cells: int = 10  # a sample with fewer passing cells is an error, not a silent empty output


def qc_metrics(adata: ad.AnnData) -> pd.DataFrame:
    """``n_counts``, ``n_genes`` and ``pct_mito`` of every cell."""
    counts = adata.X
    mito_ids = mouse_gene_table().index[mouse_gene_table()["is_mitochondrial"]]
    mito = adata.var_names.isin(mito_ids)
    n_counts = np.asarray(counts.sum(axis=1), dtype=float).ravel()
    n_genes = np.diff(counts.indptr) if hasattr(counts, "indptr") else np.count_nonzero(counts, axis=1)
    mito_counts = np.asarray(counts[:, np.flatnonzero(mito)].sum(axis=1), dtype=float).ravel()
    pct_mito = 100 * mito_counts / np.maximum(n_counts, 1)
    if "pct_mito_source" in adata.obs:  # measured on the source genes, before ortholog conversion lost some
        pct_mito = adata.obs["pct_mito_source"].to_numpy(dtype=float)
    return pd.DataFrame(
        {"n_counts": n_counts, "n_genes": n_genes.astype(int), "pct_mito": pct_mito},
        index=adata.obs_names,
    )


def _mad_outlier(values: np.ndarray, nmads: float) -> np.ndarray:
    logged = np.log1p(values)
    median = np.median(logged)
    mad = np.median(np.abs(logged - median)) * 1.4826
    if mad == 0:
        return np.zeros(len(values), dtype=bool)
    return np.abs(logged - median) > nmads * mad


def apply_qc(adata: ad.AnnData, thresholds: QCThresholds, path: str = "") -> ad.AnnData:
    """Add the QC metrics, ``filter_pass`` and ``qc_fail`` to ``adata.obs`` (in place, returned)."""
    metrics = qc_metrics(adata)
    for column in metrics:
        adata.obs[column] = metrics[column]
    checks = [
        ("duplicate", ~adata.obs["is_primary_data"].to_numpy(bool)),
        ("min_counts", metrics["n_counts"].to_numpy() < thresholds.min_counts),
        ("min_genes", metrics["n_genes"].to_numpy() < thresholds.min_genes),
        ("max_pct_mito", metrics["pct_mito"].to_numpy() > thresholds.max_pct_mito),
    ]
    # MAD outliers are judged among the cells that passed the fixed thresholds, so a flood of
    # empty droplets does not drag the median down.
    passed = ~np.any([flag for _, flag in checks], axis=0)
    mad = np.zeros(adata.n_obs, dtype=bool)
    if passed.sum() >= 3:
        idx = np.flatnonzero(passed)
        for column in ("n_counts", "n_genes"):
            mad[idx] |= _mad_outlier(metrics[column].to_numpy()[idx], thresholds.nmads)
    checks.append(("mad_outlier", mad))
    reason = np.full(adata.n_obs, "", dtype=object)
    for name, flag in reversed(checks):
        reason[flag] = name
    adata.obs["qc_fail"] = pd.Categorical(reason, categories=[""] + [n for n, _ in checks])
    adata.obs["filter_pass"] = reason == ""
    n_pass = int(adata.obs["filter_pass"].sum())
    if n_pass < thresholds.min_cells:
        raise CellfateError(
            f"only {n_pass} of {adata.n_obs} cells pass QC (need {thresholds.min_cells}); "
            f"failures: {pd.Series(reason[reason != '']).value_counts().to_dict()}", path or None
        )
    adata.uns["qc_thresholds"] = asdict(thresholds)
    return adata


def qc_table(adata: ad.AnnData) -> pd.DataFrame:
    """One row per sample: cells in and out, why, and the median metrics of the passing cells."""
    obs = adata.obs
    passing = obs[obs["filter_pass"]]
    row = {
        "source": obs["source"].iloc[0],
        "sample": obs["sample"].iloc[0],
        "cells": len(obs),
        "cells_pass": len(passing),
        **{f"fail_{k}": int(v) for k, v in obs["qc_fail"].value_counts().items() if k},
        "median_counts": float(passing["n_counts"].median()),
        "median_genes": float(passing["n_genes"].median()),
        "median_pct_mito": float(passing["pct_mito"].median()),
        "genes": adata.n_vars,
    }
    return pd.DataFrame([row])
