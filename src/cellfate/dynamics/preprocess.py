"""Which genes and cells VICDYF models: raw counts stay raw, only the selection happens here.

As in the original's recipe: drop genes with too few counts shared by spliced and unspliced
(a gene seen only spliced, or only unspliced, tells nothing about kinetics), then keep the most
variable genes of the log-normalised spliced counts; cells left without spliced counts go too.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.dynamics.model import MIN_CELLS, count_layer
from cellfate.errors import CellfateError

log = logging.getLogger(__name__)


def shared_counts(spliced: np.ndarray, unspliced: np.ndarray) -> np.ndarray:
    """Per gene: spliced + unspliced counts summed over the cells where both are non-zero."""
    both = (spliced > 0) & (unspliced > 0)
    return ((spliced + unspliced) * both).sum(0)


def dispersion_rank(spliced: np.ndarray) -> np.ndarray:
    """Genes ordered by normalised dispersion of log-normalised spliced counts (most variable first).

    Dispersion (variance / mean) is z-scored within 20 bins of mean expression, as Seurat's
    classic recipe does, so that highly expressed genes do not win by their mean alone.
    """
    libs = spliced.sum(1, keepdims=True)
    x = np.log1p(spliced / np.maximum(libs, 1) * np.median(libs))
    mean, var = x.mean(0), x.var(0)
    disp = np.log(np.maximum(var, 1e-12) / np.maximum(mean, 1e-12))
    bins = pd.cut(mean, 20, labels=False, duplicates="drop")
    frame = pd.DataFrame({"disp": disp, "bin": bins})
    grouped = frame.groupby("bin")["disp"]
    sd = grouped.transform("std").fillna(1.0).replace(0, 1.0)
    score = ((frame["disp"] - grouped.transform("mean")) / sd).to_numpy()
    return np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")


def _share_x_with(adata: ad.AnnData, layer: str, chunk: int = 4096) -> None:
    """X that equals ``layer`` (velocyto's loom: X is the spliced counts) becomes the same array: one
    cells x genes copy fewer in memory; the written file is unchanged."""
    x, counts = adata.X, adata.layers[layer]
    if sp.issparse(x) or not isinstance(x, np.ndarray) or x.shape != counts.shape or x.dtype != counts.dtype:
        return
    if all(np.array_equal(x[i:i + chunk], counts[i:i + chunk]) for i in range(0, len(x), chunk)):
        adata.X = counts


def select_genes(adata: ad.AnnData, *, min_shared_counts: int = 20, n_top_genes: int = 2000,
                 spliced_layer: str = "spliced", unspliced_layer: str = "unspliced",
                 source: str | None = None) -> ad.AnnData:
    """A copy of ``adata`` on the genes and cells VICDYF should model (integer layers untouched)."""
    spliced = count_layer(adata, spliced_layer, source)
    unspliced = count_layer(adata, unspliced_layer, source)
    keep = shared_counts(spliced, unspliced) >= min_shared_counts
    log.info("%d of %d genes have >= %d shared spliced/unspliced counts", int(keep.sum()), adata.n_vars, min_shared_counts)
    if keep.sum() < 2:
        raise CellfateError(
            f"only {int(keep.sum())} gene(s) have at least {min_shared_counts} counts shared by spliced and unspliced; "
            "lower dynamics.min_shared_counts or check the unspliced layer", source)
    genes = np.flatnonzero(keep)
    if len(genes) > n_top_genes:
        genes = np.sort(genes[dispersion_rank(spliced[:, genes])[:n_top_genes]])
    cells = spliced[:, genes].sum(1) > 0
    if cells.sum() < MIN_CELLS:
        raise CellfateError(f"only {int(cells.sum())} cells have counts in the selected genes; VICDYF needs at least {MIN_CELLS}", source)
    if (~cells).any():
        log.info("dropping %d cells without spliced counts in the selected genes", int((~cells).sum()))
    subset = adata[cells, genes].copy()
    for layer in (spliced_layer, unspliced_layer):
        if sp.issparse(subset.layers[layer]):
            subset.layers[layer] = subset.layers[layer].toarray()
    _share_x_with(subset, spliced_layer)
    log.info("VICDYF models %d cells x %d genes", subset.n_obs, subset.n_vars)
    return subset
