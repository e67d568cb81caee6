"""One epoch loop for every variational model of the workflow (VICDYF, DeepCOLOR, the environment fits).

As in scvi-tools, the loop owns what does not depend on the model and the model supplies the rest.
The loop: a fresh Adam per phase over the phase's parameters, the others frozen for the phase;
the NaN guard (a non-finite loss ends the phase and restores the best, else the last finite,
state, instead of carrying NaNs into the results); early stopping on an evaluation value with a
relative tolerance, restoring the best state; the progress bar, the log and one history record per
epoch. The model: one epoch of training (its batches go through :func:`fit_batches`, which steps
the optimiser and checks each loss) and the value early stopping watches.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from cellfate.nn.adam import Adam

log = logging.getLogger(__name__)


class NonFiniteLoss(ArithmeticError):
    """A training loss became NaN or infinite: the phase stops and restores a finite state."""


@dataclass
class Stopping:
    """Early stopping: stop after ``patience`` evaluations without a relative improvement of
    ``min_delta``; ``enabled=False`` runs every epoch and keeps the final state."""

    patience: int = 0
    min_delta: float = 1e-4
    enabled: bool = False


@dataclass
class Phase:
    """One phase of a fit, as the model describes it.

    ``run_epoch(optimizer, epoch)`` trains one epoch and returns its mean loss parts, named as the
    history records them; ``evaluate()`` is the value early stopping watches (None: nothing to
    watch, recorded as NaN). Early stopping starts after ``warmup`` epochs, while the objective
    itself is still changing. ``label`` is the record's ``phase`` value (default ``name``),
    ``first_epoch`` the number of its first epoch, ``eval_key`` the evaluation's column and
    ``loss_key`` the part the progress bar and the log show.
    """

    name: str
    params: list[torch.nn.Parameter]
    epochs: int
    lr: float
    run_epoch: Callable[[Adam, int], dict[str, float]]
    evaluate: Callable[[], float] | None = None
    warmup: int = 0
    fused: bool = False
    label: Any = None
    first_epoch: int = 0
    eval_key: str = "eval_loss"
    loss_key: str = "loss"


def fit_batches(optimizer: Adam, batches: Iterable[dict[str, torch.Tensor]], key: str) -> list[dict[str, torch.Tensor]]:
    """One optimiser step on ``parts[key]`` of each batch's loss parts; returns the parts, detached.

    ``batches`` is lazy (a generator), so each loss is computed only when its step comes. A
    non-finite loss raises :class:`NonFiniteLoss` before it reaches the weights.
    """
    out = []
    for parts in batches:
        loss = parts[key]
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"the loss became {loss.detach().item()}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out.append({k: v.detach() for k, v in parts.items()})
    return out


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights to fall back on (plain clones: cheaper than a deep copy)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class StateKeeper:
    """The best state under early stopping and the last finite one, and which to restore."""

    def __init__(self, module: torch.nn.Module, stopping: Stopping) -> None:
        self.module, self.stopping = module, stopping
        self.best = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_good = snapshot(module)
        self.wait = 0

    def after_epoch(self, value: float, watch: bool) -> bool:
        """Book an epoch's evaluation (early stopping watches it when ``watch``); True: stop."""
        if watch and self.stopping.enabled:
            threshold = self.best - self.stopping.min_delta * abs(self.best) if math.isfinite(self.best) else math.inf
            if value < threshold:
                self.best, self.wait, self.best_state = value, 0, snapshot(self.module)
            else:
                self.wait += 1
            if self.wait >= self.stopping.patience:
                return True
        if self.best_state is None:  # once a best state exists, a NaN falls back on it
            self.last_good = snapshot(self.module)
        return False

    def restore(self, failed: bool) -> None:
        """After a NaN: the best state, else the last finite one; otherwise the best state when
        early stopping is on (off, the final state stays, for fixed-epoch comparisons)."""
        if failed:
            self.module.load_state_dict(self.best_state or self.last_good)
        elif self.stopping.enabled and self.best_state is not None:
            self.module.load_state_dict(self.best_state)


def _epoch_record(phase: Phase, optimizer: Adam, epoch: int) -> dict[str, Any]:
    """Train one epoch and evaluate: the history record, or NonFiniteLoss."""
    parts = phase.run_epoch(optimizer, epoch)
    held = phase.evaluate() if phase.evaluate is not None else math.nan
    if not all(math.isfinite(v) for v in parts.values()) or (phase.evaluate is not None and not math.isfinite(held)):
        raise NonFiniteLoss(f"the epoch's loss became {parts.get(phase.loss_key)} (evaluation {held})")
    label = phase.name if phase.label is None else phase.label
    return {"phase": label, "epoch": epoch + phase.first_epoch, **parts, phase.eval_key: held}


def _freeze_others(module: torch.nn.Module, params: list[torch.nn.Parameter]) -> None:
    trained = {id(p) for p in params}
    for p in module.parameters():
        p.requires_grad_(id(p) in trained)


def run_phase(module: torch.nn.Module, phase: Phase, stopping: Stopping, progress: bool = True,
              log_every: int = 0) -> tuple[list[dict[str, Any]], bool]:
    """Train one phase; returns its history and False when it ended on a non-finite loss.

    Parameters outside ``phase.params`` are frozen during the phase; every parameter is trainable
    again afterwards.
    """
    if phase.epochs <= 0:
        return [], True
    _freeze_others(module, phase.params)
    optimizer = Adam(phase.params, lr=phase.lr, fused=phase.fused)
    keeper = StateKeeper(module, stopping if phase.evaluate is not None else Stopping())
    history: list[dict[str, Any]] = []
    failed, start = False, time.perf_counter()
    bar = tqdm(range(phase.epochs), desc=phase.name, disable=not progress, mininterval=1.0, leave=False)
    try:
        for epoch in bar:
            try:
                record = _epoch_record(phase, optimizer, epoch)
            except NonFiniteLoss as err:
                log.warning("%s, epoch %d: %s; restored the last good state and stopped", phase.name, epoch + 1, err)
                failed = True
                break
            history.append(record)
            _report(phase, record, bar, log_every)
            if keeper.after_epoch(record[phase.eval_key], epoch >= phase.warmup):
                log.info("%s: no improvement for %d epochs; stopped at epoch %d (best %.3f)", phase.name,
                         stopping.patience, epoch + 1, keeper.best)
                break
    finally:
        bar.close()
        for p in module.parameters():
            p.requires_grad_(True)
    keeper.restore(failed)
    log.info("%s: %d epochs in %.1f s", phase.name, len(history), time.perf_counter() - start)
    return history, not failed


def _report(phase: Phase, record: dict[str, Any], bar: tqdm, log_every: int) -> None:
    """Progress bar postfix every epoch; a log line every ``log_every`` epochs and at the last."""
    loss, held = record[phase.loss_key], record[phase.eval_key]
    bar.set_postfix(loss=f"{loss:.2f}", eval=f"{held:.2f}", refresh=False)
    n = record["epoch"] - phase.first_epoch + 1
    if log_every and (n % log_every == 0 or n == phase.epochs):
        log.info("%s epoch %d/%d: loss %.3f, evaluation %.3f", phase.name, n, phase.epochs, loss, held)
