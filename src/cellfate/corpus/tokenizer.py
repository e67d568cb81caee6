"""Rank-value encoding of cells into token ids, streamed from a QC'd h5ad into Arrow shards.

Per cell (Geneformer's encoding): take the non-zero genes that have a token and a median, value =
``count / n_counts * 10_000 / median``, order by value descending, map to token ids, truncate.

* **v1** (Geneformer v1, Mouse-Geneformer): at most ``max_length`` (2048) gene tokens, no special
  tokens. **v2**: ``<cls>``, at most ``max_length - 2`` gene tokens, ``<eos>`` (4096 in all).
* **Tie-break**: genes with exactly equal values are ordered by ascending token id, which for a
  dictionary built by cellfate is ascending Ensembl id. The reference uses numpy's unstable
  argsort, whose order of ties depends on numpy's version and the CPU; ours does not, and agrees
  with it outside groups of equal values. Where a tie group straddles the cut, ours keeps the
  group's lowest token ids.
* **Values** are computed with the reference's float operations (see ``kernels.rank_value``) so
  that nearly equal values order as the reference orders them.
* **Stored zeros** (explicit zeros in the CSR) are not expressed genes and are dropped; the
  reference would give them a token, ranked last.
* Cells that fail QC (``filter_pass``) are skipped; QC-passed cells with no gene in the vocabulary
  are dropped and counted.

Streaming: rows are read in chunks (``reader``), encoded by compiled kernels and numpy's SIMD sort
(one per row) on ``threads`` threads, and appended to the shard files in file order, so peak
memory is a few chunks whatever the number of cells.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from cellfate.corpus import kernels
from cellfate.corpus.dictionary import (
    CLS,
    DEFAULT_MAX_LENGTH,
    EOS,
    check_dictionary_version,
    check_version_name,
    load_gene_medians,
    load_token_dictionary,
)
from cellfate.corpus.reader import Chunk, CountsFile, Workspace, open_counts
from cellfate.corpus.shards import DEFAULT_MAX_FILE_BYTES, shard_directory, token_batch
from cellfate.errors import CellfateError
from cellfate.io import atomic_path, write_text

log = logging.getLogger(__name__)

_VERSION_SUFFIX = re.compile(r"^(ENS[A-Z]*G\d+)\.\d+$")


def normalise_gene_id(gene_id: str) -> str:
    """Upper case, without an Ensembl version suffix (ENSMUSG00000000001.4 -> ENSMUSG00000000001)."""
    gene_id = str(gene_id).strip().upper()
    if "." not in gene_id:
        return gene_id
    match = _VERSION_SUFFIX.match(gene_id)
    return match.group(1) if match else gene_id


@dataclass(frozen=True)
class FileVocabulary:
    """How one file's columns map onto the dictionary: token and 1/median per column."""

    col_inv_median: np.ndarray  # float64, 1 / median (reference arithmetic), 0 where unknown
    col_token: np.ndarray  # int32, token id per column, -1 where unknown
    token_inv_median: np.ndarray  # float64, the same 1 / median indexed by token id
    n_genes: int  # columns in the file

    @property
    def n_known(self) -> int:
        return int((self.col_token >= 0).sum())


class RankValueTokenizer:
    """A token dictionary + gene medians + a version: encodes CSR chunks into token rows."""

    def __init__(self, token_dictionary: Mapping[str, int], gene_medians: Mapping[str, float], version: str = "v1",
                 max_length: int | None = None, source: str | None = None) -> None:
        check_version_name(version)
        check_dictionary_version(token_dictionary, version, source)
        self.version = version
        self.max_length = DEFAULT_MAX_LENGTH[version] if max_length is None else int(max_length)
        n_special = 2 if version == "v2" else 0
        if self.max_length <= n_special:
            raise CellfateError(f"tokenize.max_length {self.max_length} leaves no room for genes in {version}")
        self.max_genes = self.max_length - n_special
        self.first_token = token_dictionary[CLS] if version == "v2" else -1
        self.last_token = token_dictionary[EOS] if version == "v2" else -1
        self.source = source or "the token dictionary"
        self.gene_token = {}
        self.gene_median = {}
        missing_median = 0
        for gene, token in token_dictionary.items():
            if gene.startswith("<"):
                continue
            key = normalise_gene_id(gene)
            if key not in gene_medians and gene not in gene_medians:
                missing_median += 1
                continue
            self.gene_token[key] = token
            self.gene_median[key] = gene_medians.get(gene, gene_medians.get(key))
        if missing_median:
            log.warning("%d dictionary genes have no median and will never be tokenized", missing_median)
        if not self.gene_token:
            raise CellfateError("no dictionary gene has a median: the dictionary and the median table do not match", source)

    @classmethod
    def from_files(cls, token_dictionary: str | os.PathLike[str], gene_medians: str | os.PathLike[str],
                   version: str = "v1", max_length: int | None = None) -> "RankValueTokenizer":
        """From a token dictionary (JSON or Geneformer pickle) and medians (TSV, JSON or pickle)."""
        dictionary = load_token_dictionary(token_dictionary)
        return cls(dictionary, load_gene_medians(gene_medians), version, max_length, source=str(token_dictionary))

    # -- per file ---------------------------------------------------------------------------------
    def vocabulary(self, gene_ids: Sequence[str], path: str | os.PathLike[str] | None = None) -> FileVocabulary:
        """Map a file's genes to tokens and medians; no gene in the vocabulary is an error with the overlap."""
        genes = [normalise_gene_id(g) for g in gene_ids]
        if len(set(genes)) != len(genes):
            dup = next(g for g, n in Counter(genes).items() if n > 1)
            raise CellfateError(f"gene id {dup} appears twice in var; QC must sum duplicate genes", path)
        tokens = np.array([self.gene_token.get(g, -1) for g in genes], dtype=np.int64)
        known = np.flatnonzero(tokens >= 0)
        if known.size == 0:
            example = genes[0] if genes else "none"
            raise CellfateError(
                f"no gene is in the vocabulary: overlap 0 of {len(genes)} genes (dictionary {self.source}: "
                f"{len(self.gene_token)} genes with medians, e.g. {next(iter(self.gene_token))}; this file: e.g. {example}). "
                "Are the var_names mouse Ensembl ids, and is this the right dictionary?", path)
        inv_median = np.zeros(len(genes))
        inv_median[known] = np.divide(1, np.array([self.gene_median[genes[c]] for c in known]))
        share = known.size / max(len(genes), 1)
        (log.warning if share < 0.5 else log.info)(
            "%s: %d of %d genes (%.1f%%) are in the vocabulary", path, known.size, len(genes), 100 * share)
        token_inv_median = np.zeros(int(tokens.max()) + 1)
        token_inv_median[tokens[known]] = inv_median[known]
        return FileVocabulary(inv_median, tokens.astype(np.int32), token_inv_median, len(genes))

    def encode(self, vocab: FileVocabulary, chunk: Chunk, passed: np.ndarray, totals: np.ndarray,
               work: Workspace | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Token rows of a chunk: (tokens, offsets, rows of the chunk written, rows cut at the maximum).

        With ``work``, scratch and output arrays live in it: the tokens stay valid until the
        workspace encodes its next chunk.
        """
        work = work or Workspace()
        n_rows = chunk.n_rows
        row_nnz = np.diff(chunk.indptr)
        pos_bits = max(1, int(row_nnz.max(initial=1) - 1).bit_length())
        token_bits = max(1, len(vocab.token_inv_median).bit_length())
        if pos_bits + token_bits > 33:  # the dropped value bits and a token must share 64 bits
            raise CellfateError(f"{vocab.n_genes} genes per cell and token ids up to {len(vocab.token_inv_median)} "
                                "exceed the sort key; this tokenizer supports up to 2**33 of their product")
        inv_total = np.divide(1, totals.astype(np.float64))
        keys = work.array("keys", len(chunk.data), np.uint64)
        kept = np.empty(n_rows, dtype=np.int64)
        kernels.fill_rank_keys(chunk.indptr, chunk.indices, chunk.data, passed, inv_total, vocab.col_token,
                               vocab.col_inv_median, pos_bits, token_bits, keys, kept)
        kernels.sort_rows(keys, chunk.indptr, kept)
        n_special = 2 if self.first_token >= 0 else 0
        capacity = int(np.minimum(kept, self.max_genes).sum()) + n_special * n_rows
        tokens = work.array("tokens", capacity, np.int32)
        offsets = np.empty(n_rows + 1, dtype=np.int64)
        rows = np.empty(n_rows, dtype=np.int64)
        scratch = work.array("bucket", int(row_nnz.max(initial=1)), np.uint64)
        n_out = kernels.emit_rank_value(keys, kept, chunk.indptr, chunk.data, inv_total, vocab.token_inv_median,
                                        pos_bits, token_bits, self.max_genes, self.first_token, self.last_token,
                                        scratch, tokens, offsets, rows)
        return tokens[: offsets[n_out]], offsets[: n_out + 1], rows[:n_out], int((kept > self.max_genes).sum())


# -- streaming a file into shards -----------------------------------------------------------------
def _attribute_type(counts: CountsFile, name: str) -> pa.DataType:
    sample = counts.obs(name, 0, min(1, counts.n_obs))
    if sample.dtype.kind == "b":
        return pa.bool_()
    if sample.dtype.kind in "iu":
        return pa.int64()
    if sample.dtype.kind == "f":
        return pa.float64()
    return pa.string()


def _attribute_array(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    if pa.types.is_string(dtype):
        values = [None if v is None else str(v) for v in values]
    return pa.array(values, type=dtype)


def _check_totals(passed: np.ndarray, totals: np.ndarray, nnz: np.ndarray, chunk: Chunk, path) -> None:
    bad = passed & (nnz > 0) & ~(totals > 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise CellfateError(f"cell {chunk.start + row} passed QC with counts but n_counts = {totals[row]}", path)


def _write_lengths(
    lengths: list[np.ndarray], lengths_path: str | os.PathLike[str], stats: dict, h5ad: str | os.PathLike[str]
) -> None:
    """Save the cells' token counts (one .npy), add their mean to ``stats`` and log the sample's counts."""
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32)
    with atomic_path(lengths_path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, all_lengths)
    stats["mean_length"] = float(all_lengths.mean()) if all_lengths.size else 0.0
    log.info("%s: %s", h5ad, ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))
    if stats["cells_dropped_no_known_gene"]:
        log.warning("%s: %d QC-passed cells have no gene in the vocabulary and were dropped", h5ad, stats["cells_dropped_no_known_gene"])


def tokenize_h5ad(
    h5ad: str | os.PathLike[str],
    tokenizer: RankValueTokenizer,
    out_dir: str | os.PathLike[str],
    lengths_path: str | os.PathLike[str],
    *,
    cell_attributes: Sequence[str] = ("cell_type",),
    chunk_size: int = 1024,
    threads: int = 2,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> dict:
    """Tokenize the QC-passed cells of one sample into a save_to_disk directory + lengths file.

    Returns the sample's counts (cells in, QC-passed, tokenized, dropped with no known gene,
    truncated, mean length), also logged.
    """
    with open_counts(h5ad) as counts:
        counts.require_obs("n_counts", "filter_pass", *cell_attributes)
        vocab = tokenizer.vocabulary(counts.gene_ids(), h5ad)
        types = {name: _attribute_type(counts, name) for name in cell_attributes}
        stats = {"cells_in": counts.n_obs, "cells_qc_passed": 0, "cells_tokenized": 0,
                 "cells_dropped_no_known_gene": 0, "cells_truncated": 0,
                 "genes_in_file": vocab.n_genes, "genes_in_vocabulary": vocab.n_known}
        lengths: list[np.ndarray] = []
        depth = max(1, threads) + 1  # chunks in flight: one being read, one per thread encoding
        free = [Workspace() for _ in range(depth)]
        bounds = counts.chunk_bounds(chunk_size)
        with shard_directory(out_dir, types, max_file_bytes) as writer, ThreadPoolExecutor(max(1, threads)) as pool, \
                tqdm(total=len(bounds), desc=f"tokenize {os.path.basename(str(h5ad))}", unit="chunk") as progress:
            pending: deque = deque()

            def finish_oldest() -> None:
                future, chunk, passed, work = pending.popleft()
                tokens, offsets, rows, truncated = future.result()
                stats["cells_tokenized"] += len(rows)
                stats["cells_dropped_no_known_gene"] += int(passed.sum()) - len(rows)
                stats["cells_truncated"] += truncated
                attributes = {name: _attribute_array(counts.obs(name, chunk.start, chunk.stop)[rows], dtype)
                              for name, dtype in types.items()}
                writer.write(token_batch(writer.schema, tokens, offsets, attributes))  # copied to disk here
                lengths.append(np.diff(offsets).astype(np.int32))
                free.append(work)
                progress.update(1)

            for start, stop in bounds:
                if not free:
                    finish_oldest()
                work = free.pop()
                chunk = counts.read_rows(start, stop, work)
                passed = counts.obs("filter_pass", start, stop).astype(bool)
                totals = counts.obs("n_counts", start, stop).astype(np.float64)
                _check_totals(passed, totals, np.diff(chunk.indptr), chunk, h5ad)
                stats["cells_qc_passed"] += int(passed.sum())
                pending.append((pool.submit(tokenizer.encode, vocab, chunk, passed, totals, work), chunk, passed, work))
            while pending:
                finish_oldest()
    _write_lengths(lengths, lengths_path, stats, h5ad)
    return stats


def tokenize_sample(
    h5ad: str | os.PathLike[str],
    token_dictionary: str | os.PathLike[str],
    gene_medians: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    lengths: str | os.PathLike[str],
    stats: str | os.PathLike[str],
    *,
    source: str = "",
    sample: str = "",
    version: str = "v1",
    max_length: int | None = None,
    cell_attributes: Sequence[str] = ("cell_type",),
    chunk_size: int = 1024,
    threads: int = 1,
) -> dict:
    """Rule tokenize_sample: one sample's shards, lengths file and counts (JSON)."""
    tokenizer = RankValueTokenizer.from_files(token_dictionary, gene_medians, version, max_length)
    result = tokenize_h5ad(h5ad, tokenizer, out_dir, lengths, cell_attributes=cell_attributes,
                           chunk_size=chunk_size, threads=threads)
    result = {"source": source, "sample": sample, **result}
    write_text(stats, json.dumps(result, indent=1) + "\n")
    return result
