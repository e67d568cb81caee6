"""Tokenized cells with their attributes, for using the model (classification, embedding, perturbation).

Pretraining only needs the token lists (:func:`cellfate.foundation.data.load_corpus`); using the
model also needs each cell's attributes (cell type, source, sample, tissue) and usually a subset of
cells. Attributes are read first (small columns), the subset chosen from them, and only the chosen
cells' token lists are gathered from the memory-mapped shards, into one flat int32 array with row
offsets: a ragged matrix that the perturbation code slices without per-cell Python objects.

A corpus tokenized with another dictionary than the model's is the commonest way to get an
``IndexError`` (or silently wrong genes) from Geneformer; :func:`check_dictionaries` and
:func:`check_token_range` turn both into one-line errors naming the files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellfate.errors import CellfateError
from cellfate.foundation.data import load_corpus

log = logging.getLogger(__name__)

ATTRIBUTES = ("cell_type", "source", "sample", "tissue")


@dataclass
class TokenizedCells:
    """Cells as a ragged token matrix (``tokens[offsets[i]:offsets[i + 1]]``) plus ``obs``."""

    tokens: np.ndarray  # int32
    offsets: np.ndarray  # int64, len(obs) + 1
    obs: pd.DataFrame

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def ids(self, i: int) -> np.ndarray:
        """The token ids of cell ``i``."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def rows(self, indices: Sequence[int] | np.ndarray | None = None) -> list[np.ndarray]:
        """Token id arrays of the given cells (all by default), as views."""
        indices = range(len(self)) if indices is None else indices
        return [self.ids(int(i)) for i in indices]

    def subset(self, indices: Sequence[int] | np.ndarray) -> TokenizedCells:
        """The given cells, in the given order."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = self.rows(indices)
        return from_rows(rows, self.obs.iloc[indices].reset_index(drop=True))


def from_rows(rows: Sequence[np.ndarray], obs: pd.DataFrame | None = None) -> TokenizedCells:
    """Cells from a list of token id arrays (tests, converted samples)."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.concatenate(rows).astype(np.int32) if len(rows) else np.zeros(0, dtype=np.int32)
    if obs is None:
        obs = pd.DataFrame(index=pd.RangeIndex(len(rows)))
    if len(obs) != len(rows):
        raise ValueError(f"{len(rows)} cells but {len(obs)} obs rows")
    return TokenizedCells(tokens, offsets, obs.reset_index(drop=True))


def read_attributes(shards: Sequence[str | os.PathLike[str]], attributes: Sequence[str] = ATTRIBUTES) -> pd.DataFrame:
    """The attribute columns of every cell of every shard (in shard order), plus ``shard`` and ``shard_row``.

    An attribute a shard lacks is filled with ``unknown`` and logged: a user error only where a
    rule needs that column (say, the label of a classifier), which checks for itself.
    """
    import datasets

    parts = []
    for shard in map(Path, shards):
        if not (shard / "state.json").is_file():
            raise CellfateError("tokenized shard not found (expected a datasets save_to_disk folder)", shard)
        data = datasets.load_from_disk(str(shard))
        present = [a for a in attributes if a in data.column_names]
        frame = data.select_columns(present).to_pandas() if present else pd.DataFrame(index=range(data.num_rows))
        for missing in sorted(set(attributes) - set(present)):
            log.warning("%s: no %r column; using 'unknown'", shard, missing)
            frame[missing] = "unknown"
        frame = frame[list(attributes)].astype(str)
        frame["shard"] = str(shard)
        frame["shard_row"] = np.arange(len(frame))
        parts.append(frame)
    if not parts:
        raise CellfateError("no tokenized shards given")
    return pd.concat(parts, ignore_index=True)


def load_cells(
    shards: Sequence[str | os.PathLike[str]],
    *,
    attributes: Sequence[str] = ATTRIBUTES,
    select: Mapping[str, object] | None = None,
    max_cells: int | None = None,
    seed: int = 0,
) -> TokenizedCells:
    """The cells of ``shards`` that match ``select`` (column -> value or list of values), at most
    ``max_cells`` of them drawn with ``seed`` (kept in corpus order), with their token lists."""
    corpus = load_corpus(list(map(str, shards)))  # checks the shards and their lengths files
    obs = read_attributes(shards, attributes)
    keep = np.ones(len(obs), dtype=bool)
    for column, wanted in (select or {}).items():
        if column not in obs:
            raise CellfateError(f"cannot select on {column!r}: the shards have columns {', '.join(attributes)}")
        values = [wanted] if isinstance(wanted, str) or not isinstance(wanted, Sequence) else list(wanted)
        keep &= obs[column].isin([str(v) for v in values]).to_numpy()
    keep &= corpus.lengths > 0
    chosen = np.flatnonzero(keep)
    if max_cells is not None and len(chosen) > max_cells:
        chosen = np.sort(np.random.default_rng([seed, 3]).choice(chosen, size=max_cells, replace=False))
    if len(chosen) == 0:
        raise CellfateError(f"no cell with tokens matches {dict(select or {})} in {len(shards)} shard(s)")
    rows = corpus.__getitems__(chosen.tolist())
    cells = from_rows(rows, obs.iloc[chosen])
    log.info("%d of %d cells loaded from %d shard(s) (%d tokens)", len(cells), len(obs), len(shards), len(cells.tokens))
    return cells


def cut_to(cells: TokenizedCells, max_tokens: int | None, token_to_id: Mapping[str, int]) -> TokenizedCells:
    """Each cell cut to its first ``max_tokens`` tokens (its highest-ranked genes); a final ``<eos>`` is kept.

    Attention costs the square of the length, so on a CPU the top few hundred genes of each cell
    make the model several times cheaper; rank-value encoding puts the most cell-specific first.
    """
    if not max_tokens or len(cells) == 0 or int(cells.lengths.max()) <= max_tokens:
        return cells
    if max_tokens < 3:
        raise CellfateError(f"max_tokens must be at least 3, got {max_tokens}")
    eos = token_to_id.get("<eos>", -1)
    rows = []
    for row in cells.rows():
        if len(row) > max_tokens:
            row = np.concatenate([row[: max_tokens - 1], row[-1:]]) if eos >= 0 and row[-1] == eos else row[:max_tokens]
        rows.append(row)
    return from_rows(rows, cells.obs)


def check_dictionaries(shard_dictionary: str | os.PathLike[str], model_dictionary: str | os.PathLike[str]) -> None:
    """The shards' dictionary must be the model's, token for token; otherwise say where they differ."""
    try:
        ours, theirs = (json.loads(Path(p).read_text()) for p in (shard_dictionary, model_dictionary))
    except FileNotFoundError as err:
        raise CellfateError("token dictionary not found", err.filename) from None
    except json.JSONDecodeError as err:
        raise CellfateError(f"token dictionary is not valid JSON ({err.msg})", shard_dictionary) from None
    if ours == theirs:
        return
    differ = next((t for t in ours if theirs.get(t) != ours[t]), None) or next(t for t in theirs if t not in ours)
    raise CellfateError(
        f"the cells were tokenized with another dictionary than the model's ({model_dictionary}: {len(theirs)} tokens, "
        f"this one {len(ours)}; first difference at {differ!r}: {ours.get(differ)} vs {theirs.get(differ)}). "
        "Tokenize the cells with the model's token_dictionary.json",
        shard_dictionary,
    )


def check_token_range(cells: TokenizedCells, vocab_size: int, where: str | os.PathLike[str] | None = None) -> None:
    """Every token id must index the model's embedding table (else: another dictionary was used)."""
    if len(cells.tokens) == 0:
        return
    high, low = int(cells.tokens.max()), int(cells.tokens.min())
    if high >= vocab_size or low < 0:
        raise CellfateError(
            f"token id {high if high >= vocab_size else low} is outside the model's vocabulary of {vocab_size} tokens: "
            "the cells were tokenized with another token dictionary than the model's",
            where,
        )
