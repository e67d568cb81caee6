"""Which genes and cells VICDYF models: raw counts stay raw, only the selection happens here.

As in the original's recipe: drop genes with too few counts shared by spliced and unspliced
(a gene seen only spliced, or only unspliced, tells nothing about kinetics), then keep the most
variable genes of the log-normalised spliced counts; cells left without spliced counts go too.
"""

from __future__ import annotations

import logging
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.counts import dense
from cellfate.dynamics.model import MIN_CELLS, checked_layer
from cellfate.errors import CellfateError

log = logging.getLogger(__name__)
#: Matrix entries read at once (row blocks of the selection, gene blocks of the dispersion):
#: 32 MiB of float32 per temporary, whatever the number of genes (2,000 or 30,000) or cells.
BLOCK_ENTRIES = 2**23


def _block(n_other: int) -> int:
    """Rows (or genes) per block when each spans ``n_other`` genes (or cells)."""
    return max(64, BLOCK_ENTRIES // max(1, n_other))


def _rows(matrix: Any, start: int, stop: int, genes: np.ndarray | None = None) -> np.ndarray:
    """Cells ``start:stop`` of a dense or sparse layer (optionally only ``genes``) as dense float32:
    the selection reads the counts a block at a time, never as a whole float copy."""
    block = matrix[start:stop]
    if genes is not None:
        block = block[:, genes]
    return dense(block, dtype=None).astype(np.float32)


def shared_counts(spliced: Any, unspliced: Any, chunk: int | None = None) -> np.ndarray:
    """Per gene: spliced + unspliced counts summed over the cells where both are non-zero."""
    chunk = chunk or _block(spliced.shape[1])
    total = np.zeros(spliced.shape[1], dtype=np.float64)
    for start in range(0, spliced.shape[0], chunk):
        s, u = _rows(spliced, start, start + chunk), _rows(unspliced, start, start + chunk)
        total += ((s + u) * ((s > 0) & (u > 0))).sum(0, dtype=np.float64)
    return total


def dispersion_rank(spliced: Any, genes: np.ndarray | None = None, chunk: int | None = None,
                    gene_block: int | None = None) -> np.ndarray:
    """Genes (of ``genes``, default all) ordered by normalised dispersion of log-normalised spliced
    counts (most variable first); positions are into ``genes``.

    Dispersion (variance / mean) is z-scored within 20 bins of mean expression, as Seurat's
    classic recipe does, so that highly expressed genes do not win by their mean alone. Library
    sizes come from row blocks and the per-gene moments from blocks of genes: each gene's column
    is summed in the same order as in one whole matrix, without holding one.
    """
    genes = np.arange(spliced.shape[1]) if genes is None else np.asarray(genes)
    chunk, gene_block = chunk or _block(len(genes)), gene_block or _block(spliced.shape[0])
    libs = np.concatenate([_rows(spliced, i, i + chunk, genes).sum(1) for i in range(0, spliced.shape[0], chunk)])
    libs = libs[:, None]
    scale = np.maximum(libs, 1)
    median = np.median(libs)
    mean, var = np.empty(len(genes), np.float32), np.empty(len(genes), np.float32)
    for g in range(0, len(genes), gene_block):
        x = np.log1p(_rows(spliced, 0, spliced.shape[0], genes[g:g + gene_block]) / scale * median)
        mean[g:g + gene_block], var[g:g + gene_block] = x.mean(0), x.var(0)
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
    if x is counts or sp.issparse(x) or not isinstance(x, np.ndarray) or not isinstance(counts, np.ndarray) \
            or x.shape != counts.shape or x.dtype != counts.dtype:
        return
    if all(np.array_equal(x[i:i + chunk], counts[i:i + chunk]) for i in range(0, len(x), chunk)):
        adata.X = counts


def _take(matrix: Any, cells: np.ndarray, genes: np.ndarray) -> Any:
    """``matrix[cells, genes]`` in one copy, or the matrix itself when every cell and gene stays."""
    if cells.all() and len(genes) == matrix.shape[1] and (genes == np.arange(len(genes))).all():
        return matrix
    if isinstance(matrix, np.ndarray):
        return matrix[np.ix_(np.flatnonzero(cells), genes)]
    return matrix[cells][:, genes]


def _subset(adata: ad.AnnData, cells: np.ndarray, genes: np.ndarray, consume: bool) -> ad.AnnData:
    """``adata[cells, genes].copy()``; with ``consume``, X and the layers move one at a time (the
    input loses them), so the whole input and the whole copy are never in memory together."""
    if not consume:
        return adata[cells, genes].copy()
    mats = {"X": adata.X, **{key: adata.layers[key] for key in adata.layers}}
    adata.X = None
    for key in list(adata.layers):
        del adata.layers[key]
    subset = adata[cells, genes].copy()
    taken: dict[int, Any] = {}  # X and a layer that are one array (see _share_x_with) stay one
    for key in list(mats):
        matrix = mats.pop(key)
        if matrix is None:
            continue
        part = taken.setdefault(id(matrix), _take(matrix, cells, genes))
        if key == "X":
            subset.X = part
        else:
            subset.layers[key] = part
        del matrix
    return subset


def select_genes(adata: ad.AnnData, *, min_shared_counts: int = 20, n_top_genes: int = 2000,
                 spliced_layer: str = "spliced", unspliced_layer: str = "unspliced",
                 source: str | None = None, consume: bool = False) -> ad.AnnData:
    """A copy of ``adata`` on the genes and cells VICDYF should model (integer layers untouched).

    The counts are read in blocks (no float copy of a whole layer). ``consume=True`` (the workflow
    rule) moves X and the layers into the result and leaves ``adata`` without them.
    """
    spliced = checked_layer(adata, spliced_layer, source)
    unspliced = checked_layer(adata, unspliced_layer, source)
    keep = shared_counts(spliced, unspliced) >= min_shared_counts
    log.info("%d of %d genes have >= %d shared spliced/unspliced counts", int(keep.sum()), adata.n_vars, min_shared_counts)
    if keep.sum() < 2:
        raise CellfateError(
            f"only {int(keep.sum())} gene(s) have at least {min_shared_counts} counts shared by spliced and unspliced; "
            "lower dynamics.min_shared_counts or check the unspliced layer", source)
    genes = np.flatnonzero(keep)
    if len(genes) > n_top_genes:
        genes = np.sort(genes[dispersion_rank(spliced, genes)[:n_top_genes]])
    step = _block(len(genes))
    cells = np.concatenate([_rows(spliced, i, i + step, genes).sum(1) > 0 for i in range(0, adata.n_obs, step)])
    if cells.sum() < MIN_CELLS:
        raise CellfateError(f"only {int(cells.sum())} cells have counts in the selected genes; VICDYF needs at least {MIN_CELLS}", source)
    if (~cells).any():
        log.info("dropping %d cells without spliced counts in the selected genes", int((~cells).sum()))
    del spliced, unspliced
    if consume:
        _share_x_with(adata, spliced_layer)
    subset = _subset(adata, cells, genes, consume)
    for layer in (spliced_layer, unspliced_layer):
        if sp.issparse(subset.layers[layer]):
            subset.layers[layer] = subset.layers[layer].toarray()
    _share_x_with(subset, spliced_layer)
    log.info("VICDYF models %d cells x %d genes", subset.n_obs, subset.n_vars)
    return subset
