"""Exact gene medians over the whole corpus, map-reduce style, in two mergeable passes.

The median of a gene is taken over QC-passed cells where it is non-zero, of
``count / n_counts * 10_000``. Holding every value in one place is out of the question (20M
cells are ~50 billion values), so the median is found in two map-reduce passes:

1. **Sketch** (map per sample, rule ``tokenize_sketch``): a fixed-bin histogram on a log scale
   per gene (bins ``[10**-4 * 1.01**b, 10**-4 * 1.01**(b+1))``, 1,852 bins up to 10**4).
   **Merge** (reduce, ``tokenize_median_bins``): adding histograms is exact and order-free; from
   the merged table each gene's middle ranks (one, or two for an even count) are located in a
   bin, with the number of values below that bin. Written as :class:`MedianTargets`.
2. **Values** (map per sample, ``tokenize_median_values``): every value that falls in its gene's
   median bin(s), kept exactly (float64) as distinct values with multiplicities.
   **Select** (reduce, ``tokenize_medians``): the multisets are added (again exact, any order or
   grouping), sorted per gene, and the middle rank(s) read off: the exact median, equal to
   ``pandas``' median of all values (mean of the two middle values for an even count).

Why exact: sketched medians (interpolated within a 1% bin) collapsed the 18,995 genes of the
tokenizer benchmark to 10,034 distinct medians (exact: 12,979); the extra ties reordered the
tokens of 392 of 980 held-out cells. Cost: pass 2 reads every sample once more; its output is
only the values inside one 1% bin per gene (see ``benchmarks/README.md`` for the sizes measured).
The merge holds one genes x bins table (~0.4 GB at 57k genes) whatever the number of cells.
:func:`median_accuracy` checks the result against an in-memory exact pass on a small corpus.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
TARGETS_FORMAT = 1
VALUES_FORMAT = 1


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


@dataclass
class MedianTargets:
    """Where each gene's middle ranks lie in the merged histogram (the output of pass 1).

    ``lo_*`` is the lower middle rank (1-based ``(n + 1) // 2``), ``hi_*`` the upper
    (``n // 2 + 1``; the same rank for an odd count). ``*_rank`` is the rank within the bin.
    """

    gene_ids: np.ndarray  # str, genes detected at least once, sorted
    n_cells: np.ndarray  # int64, values per gene
    lo_bin: np.ndarray  # int32
    hi_bin: np.ndarray  # int32
    lo_rank: np.ndarray  # int64, 1-based rank inside lo_bin
    hi_rank: np.ndarray  # int64, 1-based rank inside hi_bin
    bin_count: np.ndarray  # int64 (genes x 2), values in lo_bin and in hi_bin: pass 2 must find exactly these

    @classmethod
    def from_sketch(cls, sketch: MedianSketch) -> "MedianTargets":
        counts = sp.csr_matrix(sketch.counts)
        n = np.asarray(counts.sum(axis=1)).ravel().astype(np.int64)
        detected = np.flatnonzero(n > 0)
        detected = detected[np.argsort(np.asarray(sketch.gene_ids)[detected].astype(str), kind="stable")]
        fields = np.zeros((6, len(detected)), dtype=np.int64)
        for out, g in enumerate(detected):
            start, stop = counts.indptr[g], counts.indptr[g + 1]
            values = counts.data[start:stop].astype(np.int64)
            cumulative = np.cumsum(values)
            bins = counts.indices[start:stop]
            for col, rank in enumerate(((n[g] + 1) // 2, n[g] // 2 + 1)):
                k = int(np.searchsorted(cumulative, rank))
                fields[col, out] = bins[k]
                fields[2 + col, out] = rank - (cumulative[k] - values[k])
                fields[4 + col, out] = values[k]
        return cls(np.asarray(sketch.gene_ids)[detected].astype(str), n[detected], fields[0].astype(np.int32),
                   fields[1].astype(np.int32), fields[2], fields[3], fields[4:].T.copy())

    def save(self, path: str | os.PathLike[str]) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, format=TARGETS_FORMAT, binning=np.array([LOG10_LOW, LOG10_HIGH, STEP, N_BINS]),
                                    gene_ids=self.gene_ids.astype(str), n_cells=self.n_cells, lo_bin=self.lo_bin,
                                    hi_bin=self.hi_bin, lo_rank=self.lo_rank, hi_rank=self.hi_rank, bin_count=self.bin_count)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "MedianTargets":
        try:
            with np.load(path, allow_pickle=False) as npz:
                if int(npz["format"]) != TARGETS_FORMAT or not np.allclose(npz["binning"], [LOG10_LOW, LOG10_HIGH, STEP, N_BINS]):
                    raise CellfateError("median bins made with another binning; rerun the sketch jobs", path)
                return cls(npz["gene_ids"].astype(str), npz["n_cells"], npz["lo_bin"], npz["hi_bin"], npz["lo_rank"],
                           npz["hi_rank"], npz["bin_count"])
        except (OSError, KeyError, ValueError) as err:
            raise CellfateError(f"not a median-bins file ({err})", path) from None


@dataclass
class BinValues:
    """One sample's values inside the median bins: distinct (gene, bin, value) with multiplicities."""

    target: np.ndarray  # int64, row in MedianTargets
    bin: np.ndarray  # int32
    value: np.ndarray  # float64
    count: np.ndarray  # int64
    n_targets: int  # rows of the MedianTargets it was made against (a cheap consistency check)

    @staticmethod
    def _distinct(target, bins, value, count) -> tuple[np.ndarray, ...]:
        order = np.lexsort((value, bins, target))
        target, bins, value, count = target[order], bins[order], value[order], count[order]
        new = np.ones(len(value), dtype=bool)
        new[1:] = (target[1:] != target[:-1]) | (bins[1:] != bins[:-1]) | (value[1:] != value[:-1])
        starts = np.flatnonzero(new)
        return target[starts], bins[starts], value[starts], np.add.reduceat(count, starts) if len(starts) else count[:0]

    @classmethod
    def from_h5ad(cls, path: str | os.PathLike[str], targets: MedianTargets, chunk_size: int = 4096) -> "BinValues":
        """Stream one sample; keep each value that falls in its gene's lo or hi median bin."""
        row_of = {g: i for i, g in enumerate(targets.gene_ids)}
        parts: list[tuple[np.ndarray, ...]] = []
        with open_counts(path) as counts:
            counts.require_obs("n_counts", "filter_pass")
            col_target = np.array([row_of.get(str(g), -1) for g in counts.gene_ids()], dtype=np.int64)
            work = Workspace()
            for start, stop in tqdm(counts.chunk_bounds(chunk_size), desc="median values", unit="chunk"):
                chunk = counts.read_rows(start, stop, work)
                passed = counts.obs("filter_pass", chunk.start, chunk.stop).astype(bool)
                totals = counts.obs("n_counts", chunk.start, chunk.stop).astype(np.float64)
                size = len(chunk.data)
                out = (work.array("t", size, np.int64), work.array("b", size, np.int32), work.array("v", size, np.float64))
                n = kernels.collect_bin_values(chunk.indptr, chunk.indices, chunk.data, passed, totals,
                                               LOG10_LOW * np.log(10), 1.0 / np.log(STEP), N_BINS, col_target,
                                               targets.lo_bin, targets.hi_bin, *out)
                parts.append(cls._distinct(out[0][:n].copy(), out[1][:n].copy(), out[2][:n].copy(), np.ones(n, np.int64)))
        return cls.merge([cls(*p, len(targets.gene_ids)) for p in parts], len(targets.gene_ids))

    def rows(self, start: int, stop: int) -> "BinValues":
        """The values of target rows ``[start, stop)`` (entries are sorted by target row)."""
        a, b = np.searchsorted(self.target, [start, stop])
        return BinValues(self.target[a:b], self.bin[a:b], self.value[a:b], self.count[a:b], self.n_targets)

    @classmethod
    def merge(cls, parts: Sequence["BinValues"], n_targets: int) -> "BinValues":
        """Add multisets (exact, any order or grouping)."""
        if any(p.n_targets != n_targets for p in parts):
            raise CellfateError("median values made against other median bins; rerun tokenize_median_values")
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0), np.zeros(0, np.int64), n_targets)
        joined = [np.concatenate([getattr(p, f) for p in parts]) for f in ("target", "bin", "value", "count")]
        return cls(*cls._distinct(*joined), n_targets)

    def save(self, path: str | os.PathLike[str]) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, format=VALUES_FORMAT, target=self.target, bin=self.bin, value=self.value,
                                    count=self.count, n_targets=self.n_targets)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "BinValues":
        try:
            with np.load(path, allow_pickle=False) as npz:
                if int(npz["format"]) != VALUES_FORMAT:
                    raise CellfateError("median values of another format; rerun tokenize_median_values", path)
                return cls(npz["target"], npz["bin"], npz["value"], npz["count"], int(npz["n_targets"]))
        except (OSError, KeyError, ValueError) as err:
            raise CellfateError(f"not a median-values file ({err})", path) from None


def select_medians(targets: MedianTargets, values: BinValues, rows: range | None = None) -> pd.DataFrame:
    """The exact median of every gene (or of the target ``rows``): its middle value(s) read off the sorted
    values of its median bin(s)."""
    rows = range(len(targets.gene_ids)) if rows is None else rows
    group = np.flatnonzero(np.r_[True, (values.target[1:] != values.target[:-1]) | (values.bin[1:] != values.bin[:-1])])
    ends = np.r_[group[1:], len(values.target)]
    where = {(int(values.target[a]), int(values.bin[a])): (a, b) for a, b in zip(group, ends)}
    middle = np.zeros((len(targets.gene_ids), 2))  # rows outside `rows` stay 0 and are not returned
    for g in rows:
        for col, (b, rank) in enumerate(((targets.lo_bin[g], targets.lo_rank[g]), (targets.hi_bin[g], targets.hi_rank[g]))):
            a, e = where.get((g, int(b)), (0, 0))
            cumulative = np.cumsum(values.count[a:e])
            if e == a or cumulative[-1] != targets.bin_count[g, col]:
                raise CellfateError(f"gene {targets.gene_ids[g]}: {cumulative[-1] if e > a else 0} values in its median bin, "
                                    f"the sketch counted {targets.bin_count[g, col]}; the samples changed between the two "
                                    "passes: rerun the tokenize_sketch and tokenize_median_values jobs")
            middle[g, col] = values.value[a + int(np.searchsorted(cumulative, rank))]
    median = np.where(targets.n_cells % 2 == 1, middle[:, 0], middle.mean(axis=1))
    chosen = slice(rows.start, rows.stop)
    return pd.DataFrame({"gene_id": targets.gene_ids[chosen], "median": median[chosen], "n_cells": targets.n_cells[chosen]})


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


def merge_sketches(sketches: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> MedianTargets:
    """Rule tokenize_median_bins: merge every sample's sketch; write where each gene's middle ranks lie."""
    merged = _merge((MedianSketch.load(p) for p in sketches), len(sketches))
    targets = MedianTargets.from_sketch(merged)
    targets.save(out)
    log.info("%d genes detected over %d cells from %d samples", len(targets.gene_ids), merged.n_cells, len(sketches))
    return targets


def sample_bin_values(h5ad: str | os.PathLike[str], targets: str | os.PathLike[str], out: str | os.PathLike[str],
                      chunk_size: int = 4096) -> None:
    """Rule tokenize_median_values: one sample's values inside the median bins."""
    values = BinValues.from_h5ad(h5ad, MedianTargets.load(targets), chunk_size)
    values.save(out)
    log.info("%s: %d values in median bins (%d distinct)", h5ad, int(values.count.sum()), len(values.value))


def exact_from_values(targets: str | os.PathLike[str], values: Sequence[str | os.PathLike[str]],
                      out: str | os.PathLike[str], max_values: int = 20_000_000) -> pd.DataFrame:
    """Rule tokenize_medians: add every sample's bin values and write the exact gene_medians.tsv.

    Memory: the samples' values are added for one group of genes at a time, groups sized so that
    at most ~``max_values`` distinct values (~0.6 GB) are held at once; each sample's file is then
    read once per group. At 20k cells the second pass keeps ~0.6% of the stored values, so a
    20M-cell corpus (~250M values) takes about 13 groups; a small corpus one.
    """
    bins = MedianTargets.load(targets)
    n = len(bins.gene_ids)
    total = sum(len(BinValues.load(p).value) for p in values)
    groups = max(1, -(-total // max_values))
    size = -(-n // groups)
    tables = []
    for start in range(0, n, size):
        rows = range(start, min(start + size, n))
        merged = BinValues.merge([BinValues.load(p).rows(rows.start, rows.stop) for p in values], n)
        tables.append(select_medians(bins, merged, rows))
    table = pd.concat(tables, ignore_index=True)
    save_gene_medians(table, out)
    log.info("exact medians of %d genes from %d samples (%d distinct values in median bins, %d gene groups)",
             len(table), len(values), total, groups)
    return table


def two_pass_medians(h5ads: Sequence[str | os.PathLike[str]], workdir: str | os.PathLike[str],
                     out: str | os.PathLike[str], chunk_size: int = 4096) -> pd.DataFrame:
    """All four steps in one process (tests, benchmarks): sketch, merge, bin values, select."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    sketches = [work / f"sketch_{i}.npz" for i in range(len(h5ads))]
    for path, sketch in zip(h5ads, sketches):
        sketch_sample(path, sketch, chunk_size)
    merge_sketches(sketches, work / "median_bins.npz")
    values = [work / f"values_{i}.npz" for i in range(len(h5ads))]
    for path, value in zip(h5ads, values):
        sample_bin_values(path, work / "median_bins.npz", value, chunk_size)
    return exact_from_values(work / "median_bins.npz", values, out)


def median_accuracy(
    h5ads: Sequence[str | os.PathLike[str]],
    gene_medians: str | os.PathLike[str],
    out: str | os.PathLike[str],
    min_cells: int = 100,
) -> pd.DataFrame:
    """Rule tokenize_median_accuracy: the two-pass medians against an in-memory exact pass, per gene.

    Columns: gene_id, n_cells, exact, sketch, rel_error, checked (detected in >= ``min_cells``).
    """
    exact = exact_medians(h5ads)
    sketch = pd.read_csv(gene_medians, sep="\t", dtype={"gene_id": str}, float_precision="round_trip")
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
