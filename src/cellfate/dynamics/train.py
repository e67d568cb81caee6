"""VICDYF's training loop, apart from the networks and from AnnData.

Two phases, as in the original: phase 1 fits the VAE alone (spliced likelihood + KL(z); the
dynamics net and the kinetic rates frozen), so that the latent space settles before dynamics are
read off it; phase 2 fits everything. Each phase gets a fresh Adam optimiser.

Improvements over the original: a held-out set (``holdout_fraction`` of the cells) is scored
after every epoch and, with ``patience`` > 0, a phase stops once it has not improved for that
many epochs and keeps its best state (the original always runs all epochs); a non-finite loss
stops training and restores the best (else the last finite) state instead of carrying NaNs into
the results; the data live on the device as tensors and batches are index slices (no DataLoader
or worker processes per epoch). The epoch loop, with its NaN guard, early stopping and progress
bar, is the one every model shares (:mod:`cellfate.nn.training`); this module supplies the batches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from cellfate.dynamics.module import VicdyfModule
from cellfate.nn.adam import Adam
from cellfate.nn.device import resolve_device
from cellfate.nn.training import Phase, Stopping, fit_batches, run_phase

log = logging.getLogger(__name__)
#: Held-out cells scored at once (see heldout_loss).
HELDOUT_BATCH = 1024


@dataclass
class TrainingPlan:
    """How to train; every field has the original's default unless said otherwise."""

    epochs_phase1: int = 500
    epochs_phase2: int = 500
    batch_size: int = 100
    lr: float = 1e-3
    holdout_fraction: float = 0.05
    patience: int = 0  # epochs without held-out improvement before a phase stops; 0 = never
    seed: int = 42
    device: str = "auto"  # "auto": CUDA when present, else CPU
    progress: bool = True
    log_every: int = 50

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CountTensors:
    """Counts, the two factors of the size-factor matrix N (N_ij = cell_i * gene_j) and, when the
    drift reads one, each cell's condition c.

    ``log_spliced`` is log1p(spliced), the encoder's input, computed once here rather than in
    every batch of every epoch.
    """

    spliced: torch.Tensor
    unspliced: torch.Tensor
    cell_factor: torch.Tensor
    gene_factor: torch.Tensor
    condition: torch.Tensor | None = None
    log_spliced: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.log_spliced is None:
            self.log_spliced = torch.log1p(self.spliced)

    @classmethod
    def from_arrays(cls, spliced: np.ndarray, unspliced: np.ndarray, condition: np.ndarray | None = None) -> CountTensors:
        """N = rowsum(S) (outer) colsum(S) / sum(S): its mean equals the mean of S.

        The arrays are made row-major: a column-major layer (a transposed simulation, a
        Fortran-ordered h5ad) made every batch a strided view, and the per-epoch row gather of
        such a matrix was half of a phase-1 epoch.
        """
        def rows_contiguous(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))

        s, u = rows_contiguous(spliced), rows_contiguous(unspliced)
        c = None if condition is None else rows_contiguous(condition)
        total = s.sum()
        return cls(s, u, s.sum(1), s.sum(0) / total, c)

    @property
    def n_cells(self) -> int:
        return self.spliced.shape[0]

    def to(self, device: torch.device) -> CountTensors:
        c = None if self.condition is None else self.condition.to(device)
        tensors = (self.spliced, self.unspliced, self.cell_factor, self.gene_factor)
        return CountTensors(*(t.to(device) for t in tensors), c, self.log_spliced.to(device))

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The arguments of ``VicdyfModule.loss`` for these cells."""
        c = None if self.condition is None else self.condition[idx]
        return self.spliced[idx], self.unspliced[idx], self.cell_factor[idx], self.gene_factor, c

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        """Cells ``start:stop`` as views (no copy), in the layout of :meth:`batch`."""
        c = None if self.condition is None else self.condition[start:stop]
        return self.spliced[start:stop], self.unspliced[start:stop], self.cell_factor[start:stop], self.gene_factor, c

    def take(self, idx: torch.Tensor) -> CountTensors:
        """These cells, in this order, as one contiguous copy (index_select: ~5x faster than ``[idx]``)."""
        c = None if self.condition is None else self.condition.index_select(0, idx)
        rows = (t.index_select(0, idx) for t in (self.spliced, self.unspliced, self.cell_factor))
        return CountTensors(*rows, self.gene_factor, c, self.log_spliced.index_select(0, idx))

    def loss(self, module: VicdyfModule, start: int, stop: int, **options: Any) -> dict[str, torch.Tensor]:
        """``module.loss`` of cells ``start:stop`` (views), with the precomputed encoder input."""
        return module.loss(*self.rows(start, stop), log_s=self.log_spliced[start:stop], **options)


def split_cells(n_cells: int, holdout_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and held-out cell indices (at least one held out when the fraction is positive)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_cells, generator=gen)
    n_holdout = 0 if holdout_fraction <= 0 else max(1, int(round(n_cells * holdout_fraction)))
    return order[n_holdout:], order[:n_holdout]


@torch.no_grad()
def heldout_loss(module: VicdyfModule, holdout: CountTensors, phase: int, batch: int = HELDOUT_BATCH) -> float:
    """Deterministic (posterior-mean) loss on the held-out cells; NaN when none are held out.

    Scored ``batch`` cells at a time and weighted by cells (the loss is a per-cell mean): in one
    pass, 5% of 100k cells held ~1 GB of cells x genes temporaries at every epoch's end.
    """
    if holdout.n_cells == 0:
        return math.nan
    module.eval()
    total = 0.0
    for start in range(0, holdout.n_cells, batch):
        stop = min(holdout.n_cells, start + batch)
        parts = holdout.loss(module, start, stop, use_unspliced=phase == 2, sample=False)
        total += float(parts["total"]) * (stop - start)
    module.train()
    return total / holdout.n_cells


def _batch_losses(module: VicdyfModule, data: CountTensors, order: torch.Tensor, batch_size: int,
                  use_unspliced: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Each batch's loss parts, in ``order``, computed when the loop asks for them."""
    block = batch_size * 32  # cells gathered at once: bounded memory, few gathers
    for start in range(0, len(order), batch_size):
        if start % block == 0:  # one gather per block of batches, then contiguous slices of it
            shuffled = data.take(order[start:start + block])
        offset = start % block
        yield shuffled.loss(module, offset, offset + batch_size, use_unspliced=use_unspliced)


def _phase(module: VicdyfModule, data: CountTensors, train_idx: torch.Tensor, holdout: CountTensors,
           plan: TrainingPlan, phase: int, gen: torch.Generator) -> Phase:
    """Phase 1 (the VAE alone: the dynamics net and the kinetic rates frozen) or 2 (everything)."""
    frozen = {id(p) for p in module.dynamics.parameters()} | {id(p) for p in module.kinetic_parameters()}
    params = [p for p in module.parameters() if phase == 2 or id(p) not in frozen]
    n_train = len(train_idx)
    sizes = torch.tensor([min(plan.batch_size, n_train - b) for b in range(0, n_train, plan.batch_size)],
                         dtype=torch.float32, device=data.spliced.device)

    def run_epoch(optimizer: Adam, epoch: int) -> dict[str, float]:
        order = train_idx[torch.randperm(n_train, generator=gen)].to(data.spliced.device)
        parts = fit_batches(optimizer, _batch_losses(module, data, order, plan.batch_size, phase == 2), "total")
        # one vector of loss parts per batch, summed after the epoch: one device sync per epoch
        means = (torch.stack([torch.stack(list(p.values())) for p in parts]) * sizes[:, None]).sum(0) / n_train
        return {f"train_{k}": float(v) for k, v in zip(parts[0], means.tolist())}

    return Phase(f"VICDYF phase {phase}", params, plan.epochs_phase1 if phase == 1 else plan.epochs_phase2, plan.lr,
                 run_epoch, (lambda: heldout_loss(module, holdout, phase)) if holdout.n_cells else None,
                 fused=True, label=phase, first_epoch=1, eval_key="heldout_total", loss_key="train_total")


def train(module: VicdyfModule, data: CountTensors, plan: TrainingPlan) -> list[dict[str, Any]]:
    """Fit ``module`` to ``data`` in two phases; returns one record per epoch (losses by part).

    The module is moved to the plan's device and left there; every parameter is trainable again
    at the end. A phase that ends on a non-finite loss (state restored) ends the training.
    """
    device = resolve_device(plan.device)
    torch.manual_seed(plan.seed)
    gen = torch.Generator().manual_seed(plan.seed)
    module.to(device)
    data = data.to(device)
    train_idx, holdout_idx = split_cells(data.n_cells, plan.holdout_fraction, plan.seed)
    if len(train_idx) == 0:
        raise ValueError("no cells left to train on")
    log.info("training VICDYF on %s: %d cells (%d held out) x %d genes", device, len(train_idx), len(holdout_idx),
             data.spliced.shape[1])
    history: list[dict[str, Any]] = []
    module.train()
    holdout = data.take(holdout_idx.to(device))  # scored after every epoch: gathered once
    stopping = Stopping(patience=plan.patience, min_delta=1e-4, enabled=plan.patience > 0)
    for phase in (1, 2):
        records, finished = run_phase(module, _phase(module, data, train_idx, holdout, plan, phase, gen), stopping,
                                      plan.progress, plan.log_every)
        history += records
        if not finished:
            break
    module.eval()
    return history
