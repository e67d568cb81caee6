"""Gene medians over the whole corpus, map-reduce style: one mergeable sketch per sample.

The median of a gene is taken over QC-passed cells where it is non-zero, of
``count / n_counts * 10_000``. An exact median needs every value in one place: 20M cells are
~50 billion values. Instead each sample job writes a **fixed-bin histogram on a log scale** per
gene (bins ``[10**-4 * 1.01**b, 10**-4 * 1.01**(b+1))``, 1,852 bins up to 10**4), and one merge
job adds the histograms. Adding counts is exact and order-free, so any grouping of samples gives
the same merged sketch, and the merge holds one genes x bins table (~0.4 GB at 57k genes),
whatever the number of cells or samples.

Accuracy: the median is read off the bin holding the middle rank (the mean of the two middle
ranks for an even count), interpolated within the bin on the log scale, so it lies inside the
bin of the exact value and its relative error is below ``STEP - 1 = 1%`` for every gene, by
construction (typically ~0.1%). :func:`median_accuracy` checks this against exact medians on a
small corpus (the demo).

A t-digest was the alternative (Geneformer used one per gene); its error is bounded in rank, not
in value, and vectorising 57k digests is much more work than adding integer tables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from cellfate.corpus import kernels
from cellfate.corpus.dictionary import save_gene_medians
from cellfate.corpus.reader import Workspace, open_counts
from cellfate.errors import CellfateError
from cellfate.io import atomic_path, write_table

log = logging.getLogger(__name__)

LOG10_LOW = -4.0  # 1e-4: one count in 1e8 total counts
LOG10_HIGH = 4.0  # 1e4: the whole cell in one gene
STEP = 1.01  # bin edge ratio; a median's relative error is below STEP - 1
N_BINS = int(np.ceil((LOG10_HIGH - LOG10_LOW) * np.log(10) / np.log(STEP)))
SKETCH_FORMAT = 1


@dataclass
class MedianSketch:
    """Per-gene log-scale histograms of normalized counts (genes x bins, uint32 counts)."""

    gene_ids: np.ndarray  # str, one per histogram row
    counts: sp.csr_matrix  # genes x N_BINS
    n_cells: int  # QC-passed cells that went in
    n_clipped: int = 0  # values outside [1e-4, 1e4], put in the edge bins

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_h5ad(cls, path: str | os.PathLike[str], chunk_size: int = 4096) -> "MedianSketch":
        """Stream one QC'd sample and histogram every non-zero value of a QC-passed cell."""
        with open_counts(path) as counts:
            counts.require_obs("n_counts", "filter_pass")
            hist = np.zeros((counts.n_vars, N_BINS), dtype=np.uint32)
            clipped = 0
            n_cells = 0
            log_low = LOG10_LOW * np.log(10)
            inv_step = 1.0 / np.log(STEP)
            work = Workspace()
            for start, stop in tqdm(counts.chunk_bounds(chunk_size), desc="sketch", unit="chunk"):
                chunk = counts.read_rows(start, stop, work)
                passed = counts.obs("filter_pass", chunk.start, chunk.stop).astype(bool)
                totals = counts.obs("n_counts", chunk.start, chunk.stop).astype(np.float64)
                bad = passed & ~(totals > 0) & (counts.row_nnz(chunk.start, chunk.stop) > 0)
                if bad.any():
                    row = chunk.start + int(np.flatnonzero(bad)[0])
                    raise CellfateError(f"cell {row} passed QC with counts but n_counts = {totals[row - chunk.start]}", path)
                n_cells += int(passed.sum())
                clipped += kernels.accumulate_log_histogram(
                    chunk.indptr, chunk.indices, chunk.data, passed, totals, log_low, inv_step, hist,
                    work.array("bins", len(chunk.data), np.int32), work.array("grouped", len(chunk.data), np.int32),
                )
            gene_ids = counts.gene_ids()
        if len(set(gene_ids)) != len(gene_ids):
            raise CellfateError("var_names (gene ids) are not unique; QC must sum duplicate genes", path)
        if clipped:
            log.warning("%s: %d values outside [1e-4, 1e4] were put in the edge bins", path, clipped)
        return cls(gene_ids, sp.csr_matrix(hist), n_cells, clipped)

    @classmethod
    def merge(cls, sketches: Sequence["MedianSketch"]) -> "MedianSketch":
        """Add sketches (any order, any grouping: integer addition is exact)."""
        return _merge(iter(sketches), len(sketches))

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an .npz (sparse counts + gene ids + the binning it was made with), atomically."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(
                    handle,
                    format=SKETCH_FORMAT,
                    binning=np.array([LOG10_LOW, LOG10_HIGH, STEP, N_BINS]),
                    gene_ids=self.gene_ids.astype(str),
                    indptr=self.counts.indptr,
                    indices=self.counts.indices.astype(np.uint16 if N_BINS < 65536 else np.int32),
                    data=self.counts.data.astype(np.uint32),
                    n_cells=self.n_cells,
                    n_clipped=self.n_clipped,
                )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "MedianSketch":
        try:
            with np.load(path, allow_pickle=False) as npz:
                if int(npz["format"]) != SKETCH_FORMAT or not np.allclose(npz["binning"], [LOG10_LOW, LOG10_HIGH, STEP, N_BINS]):
                    raise CellfateError("sketch made with another binning; rerun the sketch jobs", path)
                counts = sp.csr_matrix(
                    (npz["data"], npz["indices"].astype(np.int32), npz["indptr"]), shape=(len(npz["gene_ids"]), N_BINS)
                )
                return cls(npz["gene_ids"].astype(object), counts, int(npz["n_cells"]), int(npz["n_clipped"]))
        except (OSError, KeyError, ValueError) as err:
            raise CellfateError(f"not a median sketch ({err})", path) from None

    # -- read-out ---------------------------------------------------------------------------------
    def medians(self) -> pd.DataFrame:
        """gene_id, median, n_cells for every gene detected at least once (sorted by gene id)."""
        return medians_from_histograms(self.gene_ids, self.counts)


def _merge(sketches, total: int) -> MedianSketch:
    """Add sketches into one dense genes x bins table, grown (by doubling) as new genes appear."""
    index: dict[str, int] = {}
    acc = np.zeros((1024, N_BINS), dtype=np.uint32)
    n_cells = clipped = 0
    for sketch in tqdm(sketches, total=total, desc="merge", unit="sketch"):
        for g in sketch.gene_ids:
            if g not in index:
                index[g] = len(index)
        if len(index) > acc.shape[0]:
            grown = np.zeros((max(len(index), 2 * acc.shape[0]), N_BINS), dtype=np.uint32)
            grown[: acc.shape[0]] = acc
            acc = grown
        rows = np.fromiter((index[g] for g in sketch.gene_ids), dtype=np.int64, count=len(sketch.gene_ids))
        coo = sketch.counts.tocoo()
        acc[rows[coo.row], coo.col] += coo.data.astype(np.uint32)  # (gene, bin) pairs are unique within a sketch
        n_cells += sketch.n_cells
        clipped += sketch.n_clipped
        if n_cells >= 2**32:
            raise CellfateError("more than 2**32 cells: widen the sketch counts to uint64")
    gene_ids = np.array(list(index), dtype=object)
    return MedianSketch(gene_ids, sp.csr_matrix(acc[: len(index)]), n_cells, clipped)


def bin_edges() -> np.ndarray:
    """Lower edge of each bin (and the upper edge of the last)."""
    return 10.0**LOG10_LOW * STEP ** np.arange(N_BINS + 1)


def _value_at_rank(rank: int, cumulative: np.ndarray, bins: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> float:
    """The ``rank``-th smallest value (1-based), spreading each bin's values evenly on the log scale."""
    k = int(np.searchsorted(cumulative, rank))
    before = cumulative[k] - counts[k]
    fraction = (rank - before - 0.5) / counts[k]  # strictly inside the bin
    return float(edges[bins[k]] * STEP**fraction)


def medians_from_histograms(gene_ids: np.ndarray, counts: sp.csr_matrix) -> pd.DataFrame:
    """The median of each gene's histogram (mean of the two middle ranks for an even count).

    Within its bin a rank is placed by interpolation on the log scale rather than at the bin's
    centre: the error bound stays below one bin ratio (1%), typical errors are much smaller, and
    medians stay distinct numbers. Bin centres would give every gene one of 1,852 values, and
    genes whose medians share a bin would then tie in every cell's rank-value order.
    """
    counts = sp.csr_matrix(counts)
    n = np.asarray(counts.sum(axis=1)).ravel().astype(np.int64)
    detected = np.flatnonzero(n > 0)
    edges = bin_edges()
    median = np.empty(len(detected))
    for out, g in enumerate(detected):
        start, stop = counts.indptr[g], counts.indptr[g + 1]
        values = counts.data[start:stop].astype(np.int64)
        cumulative = np.cumsum(values)
        bins = counts.indices[start:stop]
        lo_rank, hi_rank = (n[g] + 1) // 2, n[g] // 2 + 1  # 1-based middle ranks (equal when odd)
        lo = _value_at_rank(lo_rank, cumulative, bins, values, edges)
        hi = lo if hi_rank == lo_rank else _value_at_rank(hi_rank, cumulative, bins, values, edges)
        median[out] = (lo + hi) / 2
    table = pd.DataFrame({"gene_id": np.asarray(gene_ids)[detected].astype(str), "median": median, "n_cells": n[detected]})
    return table.sort_values("gene_id", ignore_index=True)


def exact_medians(paths: Sequence[str | os.PathLike[str]], chunk_size: int = 4096) -> pd.DataFrame:
    """Exact medians over several samples, all values in memory: for checking on small corpora."""
    gene_parts, value_parts = [], []
    for path in paths:
        with open_counts(path) as counts:
            counts.require_obs("n_counts", "filter_pass")
            genes = counts.gene_ids().astype(str)
            for chunk in counts.chunks(chunk_size):
                passed = counts.obs("filter_pass", chunk.start, chunk.stop).astype(bool)
                totals = counts.obs("n_counts", chunk.start, chunk.stop).astype(np.float64)
                rows = np.repeat(np.arange(chunk.n_rows), np.diff(chunk.indptr))
                keep = passed[rows] & (chunk.data > 0)
                gene_parts.append(genes[chunk.indices[keep]])
                value_parts.append(chunk.data[keep].astype(np.float64) / totals[rows[keep]] * 10_000)
    frame = pd.DataFrame({"gene_id": np.concatenate(gene_parts), "value": np.concatenate(value_parts)})
    grouped = frame.groupby("gene_id")["value"]
    table = pd.DataFrame({"median": grouped.median(), "n_cells": grouped.size()}).reset_index()
    return table.sort_values("gene_id", ignore_index=True)


# -- workflow steps ------------------------------------------------------------------------------
def sketch_sample(h5ad: str | os.PathLike[str], out: str | os.PathLike[str], chunk_size: int = 4096) -> None:
    """Rule tokenize_sketch: one sample's mergeable sketch."""
    sketch = MedianSketch.from_h5ad(h5ad, chunk_size)
    sketch.save(out)
    log.info("%s: %d QC-passed cells, %d genes, %d occupied bins", h5ad, sketch.n_cells, len(sketch.gene_ids), sketch.counts.nnz)


def merge_sketches(sketches: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> pd.DataFrame:
    """Rule tokenize_medians: merge every sample's sketch and write gene_medians.tsv."""
    merged = _merge((MedianSketch.load(p) for p in sketches), len(sketches))
    table = merged.medians()
    save_gene_medians(table, out)
    log.info("%d genes detected over %d cells from %d samples", len(table), merged.n_cells, len(sketches))
    return table


def median_accuracy(
    h5ads: Sequence[str | os.PathLike[str]],
    gene_medians: str | os.PathLike[str],
    out: str | os.PathLike[str],
    min_cells: int = 100,
) -> pd.DataFrame:
    """Rule tokenize_median_accuracy: sketch medians against exact ones, per gene.

    Columns: gene_id, n_cells, exact, sketch, rel_error, checked (detected in >= ``min_cells``).
    """
    exact = exact_medians(h5ads)
    sketch = pd.read_csv(gene_medians, sep="\t", dtype={"gene_id": str})
    table = exact.merge(sketch, on="gene_id", how="outer", suffixes=("_exact", "_sketch"))
    if table["median_sketch"].isna().any() or table["median_exact"].isna().any():
        raise CellfateError("the sketch and the exact pass disagree on which genes are detected", gene_medians)
    table = pd.DataFrame(
        {
            "gene_id": table["gene_id"],
            "n_cells": table["n_cells_exact"].astype(int),
            "exact": table["median_exact"],
            "sketch": table["median_sketch"],
        }
    )
    table["rel_error"] = (table["sketch"] - table["exact"]).abs() / table["exact"]
    table["checked"] = table["n_cells"] >= min_cells
    write_table(table, out)
    checked = table[table["checked"]]
    log.info(
        "median accuracy over %d genes detected in >= %d cells: max relative error %.4f%%, mean %.4f%%",
        len(checked), min_cells, 100 * checked["rel_error"].max(), 100 * checked["rel_error"].mean(),
    )
    return table
