"""In silico perturbation, batched: every (cell, gene) perturbation of many cells in full batches.

Perturbations act on a cell's rank-ordered gene tokens (``<cls>``/``<eos>`` stay in place):

* ``delete``: remove the gene's token (cells that do not express it are skipped);
* ``overexpress``: move the gene to the front, inserting it if the cell does not express it
  (the cell then re-truncated to the model's length);
* ``shift``: move (or insert) the gene to rank ``rank``.

Goal-state mode: the states are cell groups of one attribute (``start``, ``goal``, optional
``alternatives``), each summarised by the mean embedding of its cells. The shift of a perturbation
in a cell is ``cos(perturbed, goal) - cos(original, goal)``; the same is reported towards every
alternative and the start state. Optionally, the gene-embedding shifts: how much each other gene's
own hidden state moves (cosine to its unperturbed state).

Why batched: the reference runs one forward pass per (cell, gene), which leaves a GPU nearly idle
(users report 60 hours for 1,500 cells on an A100). Here a perturbation is four integers (cell,
gene token, position removed, position inserted); all perturbations of all cells are sorted by
their resulting length (then by cell) and cut into batches, each materialised by one vectorised
gather from the cells' padded token matrix and run in one forward pass -- without an attention
mask whenever the batch needs no padding, which is the common case since a cell's perturbations
all have the same length. The model call never sees a single (cell, gene).
:func:`loop_shifts` is the one-at-a-time definition the batched path is tested and benchmarked
against.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cellfate.errors import CellfateError
from cellfate.foundation.embed import Embedder
from cellfate.foundation.vocab import CLS, EOS

log = logging.getLogger(__name__)


# -- the cells' gene tokens and the perturbations as integer arrays ------------------------------
@dataclass
class GeneMatrix:
    """Start cells' gene tokens (specials stripped), right-padded, plus the special tokens to restore."""

    genes: np.ndarray  # (cells, longest + 1) int64, padded with pad_id (one spare column for gathers)
    lengths: np.ndarray  # gene tokens per cell
    pad_id: int
    cls_id: int  # -1 when cells carry no <cls>
    eos_id: int  # -1 when cells carry no <eos>
    max_genes: int  # gene tokens that fit the model (max positions minus specials)

    @classmethod
    def from_rows(cls, rows: Sequence[np.ndarray], token_to_id: Mapping[str, int], max_length: int) -> GeneMatrix:
        cls_id, eos_id, pad_id = token_to_id.get(CLS, -1), token_to_id.get(EOS, -1), token_to_id["<pad>"]
        stripped = []
        for row in rows:
            row = np.asarray(row, dtype=np.int64)
            if cls_id >= 0 and len(row) and row[0] == cls_id:
                row = row[1:]
            if eos_id >= 0 and len(row) and row[-1] == eos_id:
                row = row[:-1]
            stripped.append(row)
        has_cls = cls_id >= 0 and len(rows) and all(len(r) and r[0] == cls_id for r in rows)
        has_eos = eos_id >= 0 and len(rows) and all(len(r) and r[-1] == eos_id for r in rows)
        cls_id, eos_id = (cls_id if has_cls else -1), (eos_id if has_eos else -1)
        lengths = np.array([len(r) for r in stripped], dtype=np.int64)
        genes = np.full((len(rows), int(lengths.max(initial=0)) + 1), pad_id, dtype=np.int64)
        for i, row in enumerate(stripped):
            genes[i, : len(row)] = row
        return cls(genes, lengths, pad_id, cls_id, eos_id, max_length - (cls_id >= 0) - (eos_id >= 0))

    @property
    def n_special(self) -> int:
        return int(self.cls_id >= 0) + int(self.eos_id >= 0)


@dataclass
class Jobs:
    """Perturbations as parallel arrays: the cell, the gene token, where it is removed (-1: absent) and
    inserted (-1: deleted), and the resulting number of gene tokens."""

    cell: np.ndarray
    token: np.ndarray
    remove_at: np.ndarray
    insert_at: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.cell)

    def take(self, index: np.ndarray) -> Jobs:
        return Jobs(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def concat(cls, parts: Sequence[Jobs]) -> Jobs:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]).astype(np.int64) for f in fields(cls)))


def originals(matrix: GeneMatrix) -> Jobs:
    """The identity 'perturbation' of every cell: built by the same gather, run by the same path."""
    n = len(matrix.lengths)
    minus = np.full(n, -1, dtype=np.int64)
    return Jobs(np.arange(n), minus.copy(), minus.copy(), minus.copy(), matrix.lengths.copy())


def make_jobs(matrix: GeneMatrix, tokens: np.ndarray, target_rank: int | None, *, expressed_only: bool) -> Jobs:
    """Every (cell, token) perturbation: deletion (``target_rank`` None) or a move/insert to ``target_rank``.

    ``expressed_only`` skips cells that do not express the token (always so for deletion).
    """
    tokens = np.unique(np.asarray(tokens, dtype=np.int64))
    n_cells, width = matrix.genes.shape
    in_row = np.arange(width)[None, :] < matrix.lengths[:, None]
    present = np.isin(matrix.genes, tokens) & in_row
    cell_p, pos_p = np.nonzero(present)
    tok_p = matrix.genes[cell_p, pos_p]
    if target_rank is None:
        return Jobs(cell_p, tok_p, pos_p, np.full(len(cell_p), -1), matrix.lengths[cell_p] - 1)
    n_p = matrix.lengths[cell_p]
    parts = [Jobs(cell_p, tok_p, pos_p, np.minimum(target_rank, n_p - 1), n_p.copy())]
    if not expressed_only:
        have = np.zeros((n_cells, len(tokens)), dtype=bool)
        have[cell_p, np.searchsorted(tokens, tok_p)] = True
        cell_a, tok_index = np.nonzero(~have)
        tok_a = tokens[tok_index]
        n_a = matrix.lengths[cell_a]
        parts.append(
            Jobs(
                cell_a,
                tok_a,
                np.full(len(cell_a), -1),
                np.minimum(target_rank, n_a),
                np.minimum(n_a + 1, matrix.max_genes),
            )
        )
    return Jobs.concat(parts)


def gather(matrix: GeneMatrix, jobs: Jobs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The perturbed token rows of ``jobs`` as one padded batch: ``(input_ids, attention, source)``.

    ``source[j, k]`` is the position in the original gene row that perturbed gene position ``k``
    came from (-1 for the inserted gene and for padding): used for gene-embedding shifts.
    """
    width = int(jobs.length.max(initial=0))
    k = np.arange(width)[None, :]
    r = jobs.insert_at[:, None]
    p = jobs.remove_at[:, None]
    src = k - ((r >= 0) & (k > r))
    src = src + ((p >= 0) & (src >= p))
    valid = k < jobs.length[:, None]
    inserted = (k == r) & valid
    ids = matrix.genes[jobs.cell[:, None], np.clip(src, 0, matrix.genes.shape[1] - 1)]
    ids = np.where(inserted, jobs.token[:, None], ids)
    ids = np.where(valid, ids, matrix.pad_id)
    source = np.where(valid & ~inserted, src, -1)
    if matrix.cls_id >= 0:
        ids = np.concatenate([np.full((len(jobs), 1), matrix.cls_id), ids], axis=1)
        source = np.concatenate([np.full((len(jobs), 1), -1), source], axis=1)
    if matrix.eos_id >= 0:
        ids = np.concatenate([ids, np.full((len(jobs), 1), matrix.pad_id)], axis=1)
        source = np.concatenate([source, np.full((len(jobs), 1), -1)], axis=1)
        ids[np.arange(len(jobs)), jobs.length + (matrix.cls_id >= 0)] = matrix.eos_id
    attention = np.arange(ids.shape[1])[None, :] < (jobs.length + matrix.n_special)[:, None]
    return ids, attention, source


# -- running them --------------------------------------------------------------------------------
@dataclass
class GeneShiftAccumulator:
    """Sums of cos(perturbed, original) of every other gene's hidden state, per (perturbed, affected) gene."""

    perturbed_index: dict[int, int]  # perturbed token -> row
    vocab_size: int
    sums: torch.Tensor = field(init=False)
    counts: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        size = len(self.perturbed_index) * self.vocab_size
        if size > 200_000_000:
            raise CellfateError(
                f"gene-embedding shifts for {len(self.perturbed_index)} genes x {self.vocab_size} tokens are too "
                "many to hold; perturb fewer genes or set gene_shifts: false"
            )
        self.sums = torch.zeros(size, dtype=torch.float64)
        self.counts = torch.zeros(size, dtype=torch.float64)

    def add(self, perturbed: np.ndarray, affected: np.ndarray, cosine: np.ndarray) -> None:
        rows = np.array([self.perturbed_index[t] for t in perturbed.tolist()], dtype=np.int64)
        flat = torch.from_numpy(rows * self.vocab_size + affected)
        self.sums.index_add_(0, flat, torch.from_numpy(cosine.astype(np.float64)))
        self.counts.index_add_(0, flat, torch.ones(len(flat), dtype=torch.float64))

    def table(self, id_to_gene: Mapping[int, str], min_cells: int) -> pd.DataFrame:
        counts = self.counts.numpy()
        hit = np.flatnonzero(counts >= min_cells)
        tokens = {row: tok for tok, row in self.perturbed_index.items()}
        return (
            pd.DataFrame(
                {
                    "perturbed_gene": [id_to_gene[tokens[i // self.vocab_size]] for i in hit],
                    "affected_gene": [id_to_gene[i % self.vocab_size] for i in hit],
                    "n_cells": counts[hit].astype(int),
                    "mean_cosine": self.sums.numpy()[hit] / counts[hit],
                }
            )
            .sort_values(["perturbed_gene", "mean_cosine"])
            .reset_index(drop=True)
        )


class Perturber:
    """Cosine similarities of perturbed cells to state embeddings, batch after batch."""

    def __init__(self, embedder: Embedder, batch_size: int = 64, mix_lengths: bool | None = None) -> None:
        if batch_size < 1:
            raise CellfateError(f"perturbation batch_size must be at least 1, got {batch_size}")
        self.embedder = embedder
        self.batch_size = batch_size
        # On a GPU a small batch leaves the device idle, so lengths are mixed (with padding) to fill
        # batches. On a CPU a forward pass is compute-bound at any batch size and a padded batch
        # needs an attention mask, which costs about twice as much: one length per batch there.
        self.mix_lengths = embedder.device.type != "cpu" if mix_lengths is None else mix_lengths

    def schedule(self, jobs: Jobs) -> list[np.ndarray]:
        """Batches of job indices, longest first, of one length each (or, with ``mix_lengths``, pooled when small).

        Jobs are sorted by length (then cell, gene) and cut at every change of length. With
        ``mix_lengths`` (the default off the CPU) a batch under half full takes the next length too,
        with padding, so batches are full or at least half full; without it (the CPU default) no batch
        needs an attention mask -- on CPU a masked batch costs about twice an unmasked one.
        """
        order = np.lexsort((jobs.token, jobs.cell, -jobs.length))
        lengths = jobs.length[order]
        cuts = np.flatnonzero(np.diff(lengths)) + 1
        batches: list[np.ndarray] = []
        current: list[np.ndarray] = []
        filled = 0
        for run in np.split(order, cuts):
            if filled and (filled >= self.batch_size / 2 or not self.mix_lengths):
                batches.append(np.concatenate(current))
                current, filled = [], 0
            while len(run):
                take = run[: self.batch_size - filled]
                current.append(take)
                filled += len(take)
                run = run[len(take) :]
                if filled == self.batch_size:
                    batches.append(np.concatenate(current))
                    current, filled = [], 0
        if current:
            batches.append(np.concatenate(current))
        return batches

    def cosines(
        self,
        matrix: GeneMatrix,
        jobs: Jobs,
        states: torch.Tensor,
        *,
        desc: str = "perturb",
        gene_shifts: GeneShiftAccumulator | None = None,
    ) -> np.ndarray:
        """(jobs, states) cosine of each perturbed cell's embedding to each state embedding."""
        device = self.embedder.device
        unit_states = torch.nn.functional.normalize(states.to(device).float(), dim=1)
        out = np.zeros((len(jobs), len(states)), dtype=np.float64)
        batches = self.schedule(jobs)
        for index in tqdm(batches, desc=desc, unit="batch", disable=True if len(batches) < 2 else None):
            part = jobs.take(index)
            ids, attention, source = gather(matrix, part)
            ids_t = torch.from_numpy(ids).to(device)
            mask_t = torch.from_numpy(attention).to(device)
            hidden = self.embedder.hidden(ids_t, mask_t)
            pooled = torch.nn.functional.normalize(self.embedder.pool(hidden, ids_t, mask_t), dim=1)
            out[index] = (pooled @ unit_states.T).double().cpu().numpy()
            if gene_shifts is not None:
                self._gene_shifts(matrix, part, hidden, source, gene_shifts)
        return out

    def _gene_shifts(
        self, matrix: GeneMatrix, part: Jobs, hidden: torch.Tensor, source: np.ndarray, acc: GeneShiftAccumulator
    ) -> None:
        cells, slot = np.unique(part.cell, return_inverse=True)
        ids, attention, _ = gather(matrix, originals(matrix).take(cells))
        device = self.embedder.device
        base = self.embedder.hidden(torch.from_numpy(ids).to(device), torch.from_numpy(attention).to(device))
        offset = int(matrix.cls_id >= 0)
        j, k = np.nonzero(source >= 0)
        original = base[torch.from_numpy(slot[j]).to(device), torch.from_numpy(source[j, k] + offset).to(device)]
        cosine = torch.nn.functional.cosine_similarity(
            hidden[torch.from_numpy(j).to(device), torch.from_numpy(k).to(device)], original, dim=-1
        )
        affected = matrix.genes[part.cell[j], source[j, k]]
        acc.add(part.token[j], affected, cosine.double().cpu().numpy())


def quantize_int8(embedder: Embedder) -> Embedder:
    """Opt-in (``foundation.perturb.quantize: int8``): the embedder's Linear layers as dynamic int8, CPU only.

    Why opt-in: int8 weights and per-batch int8 activations change the hidden states by ~1%, and
    shifts are small differences of cosines, so they move too (the error against fp32 is measured
    and printed by ``benchmarks/perturb_bench.py --int8``); what stays is the ranking of strong
    effects. The pass itself is ~1.5-2x cheaper on a CPU with VNNI/AVX-512. Layers above the
    read-out layer are never run in either mode (:func:`cellfate.foundation.embed.encoder_upto`).
    """
    import copy
    import warnings

    if embedder.device.type != "cpu":
        raise CellfateError(f"quantize: int8 is for CPU runs (dynamic quantization); this run is on {embedder.device}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates quantized tensors in favour of torchao; the API still works
        embedder.encoder = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(embedder.encoder), {torch.nn.Linear}, dtype=torch.qint8
        )
    return embedder


def state_embeddings(
    embedder: Embedder, rows: Sequence[np.ndarray], labels: np.ndarray, states: Sequence[str]
) -> torch.Tensor:
    """Mean embedding of the cells of each state, in the order given."""
    vectors = []
    for state in states:
        chosen = np.flatnonzero(labels == state)
        vectors.append(torch.from_numpy(embedder.embed([rows[i] for i in chosen], desc=f"state {state}").mean(0)))
    return torch.stack(vectors)


def loop_shifts(
    model: torch.nn.Module,
    matrix: GeneMatrix,
    jobs: Jobs,
    goal: torch.Tensor,
    *,
    layer: int = -1,
    exclude: Sequence[int] = (0, 1),
) -> np.ndarray:
    """The reference's way, kept as the definition: one forward pass of the full masked-LM model per
    (cell, gene), ``output_hidden_states``, mean of the gene tokens of ``layer``, cosine to ``goal``.

    Returns the shift ``cos(perturbed, goal) - cos(original, goal)`` per job (CPU/GPU as the model).
    """
    device = next(model.parameters()).device
    goal = torch.nn.functional.normalize(goal.to(device).float(), dim=0)
    special = set(int(e) for e in exclude)

    def cosine(row: list[int]) -> float:
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([row], device=device), output_hidden_states=True)
        hidden = out.hidden_states[layer][0]
        keep = torch.tensor([t not in special for t in row], device=device)
        vector = hidden[keep].mean(0)
        return float(torch.dot(torch.nn.functional.normalize(vector, dim=0), goal))

    cache: dict[int, float] = {}
    shifts = np.zeros(len(jobs))
    for j in range(len(jobs)):
        c = int(jobs.cell[j])
        genes = matrix.genes[c, : matrix.lengths[c]].tolist()
        prefix = [matrix.cls_id] if matrix.cls_id >= 0 else []
        suffix = [matrix.eos_id] if matrix.eos_id >= 0 else []
        if c not in cache:
            cache[c] = cosine(prefix + genes + suffix)
        token = int(jobs.token[j])
        if jobs.remove_at[j] >= 0:
            genes.remove(token)
        if jobs.insert_at[j] >= 0:
            genes.insert(int(jobs.insert_at[j]), token)
            genes = genes[: matrix.max_genes]
        shifts[j] = cosine(prefix + genes + suffix) - cache[c]
    return shifts
