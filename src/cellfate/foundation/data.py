"""The tokenized corpus: per-sample shards joined without copying, plus their lengths.

The tokenizer writes, per sample, a ``save_to_disk`` folder ``{sample}/`` (columns ``input_ids``,
``length`` and cell attributes) and beside it ``{sample}.lengths.npy`` (one int per cell, same
order). ``load_corpus`` memory-maps every shard, joins them with ``concatenate_datasets`` (no
copy) and concatenates the lengths files in the same order, so the length-grouped sampler never
has to scan the token lists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cellfate.errors import CellfateError

log = logging.getLogger(__name__)


def lengths_path(shard: str | os.PathLike[str]) -> Path:
    """``{sample}.lengths.npy`` beside the shard folder ``{sample}/``."""
    shard = Path(shard)
    return shard.with_name(shard.name + ".lengths.npy")


@dataclass
class Corpus:
    """The joined token lists (``input_ids`` only) and one length per cell."""

    dataset: object  # datasets.Dataset, arrow-formatted, input_ids only
    lengths: np.ndarray
    shards: list[str]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitems__(self, indices: Sequence[int]) -> list[np.ndarray]:
        """The token ids of several cells in one Arrow gather (what DataLoader calls per batch)."""
        if len(indices) == 0:
            return []
        column: pa.ChunkedArray = self.dataset[list(indices)].column("input_ids")
        return [np.asarray(cell.values) for cell in column.combine_chunks()]

    def __getitem__(self, index: int) -> np.ndarray:
        return self.__getitems__([index])[0]


def load_corpus(shards: Sequence[str | os.PathLike[str]]) -> Corpus:
    """Memory-map the shards and their lengths files; missing or inconsistent files are user errors."""
    import datasets

    if not shards:
        raise CellfateError("no tokenized shards given")
    parts, lengths = [], []
    for shard in map(Path, shards):
        if not (shard / "state.json").is_file():
            raise CellfateError("tokenized shard not found (expected a datasets save_to_disk folder)", shard)
        part = datasets.load_from_disk(str(shard))
        if "input_ids" not in part.column_names:
            raise CellfateError(f"shard has no input_ids column (columns: {', '.join(part.column_names)})", shard)
        side = lengths_path(shard)
        if not side.is_file():
            raise CellfateError("lengths file missing beside its shard", side)
        values = np.load(side)
        if values.ndim != 1 or len(values) != part.num_rows:
            raise CellfateError(
                f"lengths file holds {values.size} values but its shard has {part.num_rows} cells", side
            )
        if part.num_rows and "length" in part.column_names:
            probe = [0, part.num_rows - 1]  # cheap consistency check: first and last cell
            stored = np.asarray(
                pc.list_value_length(part.select_columns(["input_ids"]).with_format("arrow")[probe].column(0))
            )
            if not np.array_equal(stored, values[probe]):
                raise CellfateError("lengths file does not match the token lists of its shard", side)
        parts.append(part.select_columns(["input_ids"]))
        lengths.append(values.astype(np.int64))
    joined = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    corpus = Corpus(joined.with_format("arrow"), np.concatenate(lengths), [str(s) for s in shards])
    log.info("corpus: %d cells in %d shards, %d tokens", len(corpus), len(parts), int(corpus.lengths.sum()))
    return corpus


def split_heldout(lengths: np.ndarray, fraction: float, max_cells: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) cell indices; empty cells are left out of both (nothing to predict).

    The held-out set is ``fraction`` of the usable cells, capped at ``max_cells``, and never empty
    when ``fraction`` > 0 (at least one cell), never the whole corpus (at least one cell to train).
    """
    usable = np.flatnonzero(lengths > 0)
    if len(usable) < len(lengths):
        log.warning("%d cells without tokens are left out of pretraining", len(lengths) - len(usable))
    if len(usable) == 0:
        raise CellfateError("the corpus holds no cell with tokens")
    n_heldout = min(int(round(fraction * len(usable))), max_cells) if fraction > 0 else 0
    n_heldout = min(max(n_heldout, 1 if fraction > 0 else 0), len(usable) - 1)
    order = np.random.default_rng([seed, 7]).permutation(usable)
    return np.sort(order[n_heldout:]), np.sort(order[:n_heldout])
