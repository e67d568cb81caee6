"""DeepCOLOR's two training phases, apart from the networks and from AnnData.

Phase 1 fits the single-cell VAE on mini-batches of cells, with early stopping on held-out
cells. Phase 2 freezes the VAE and fits the map head, gene scale/offset and spot dispersion; each
step mixes one batch of cells into every spot. Because the VAE is frozen, each cell's posterior
mean and its decoded rates are computed once before phase 2 (the default), which is what makes a
phase-2 epoch cost only the map head. Phase 2 stops early on its epoch loss (see train_map). A
log(x!) is left out of every loss (a constant). A loss that turns
NaN restores the last good state and ends the phase instead of ending the run.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from cellfate.optim import Adam
from cellfate.spatial.count_table import CountTable
from cellfate.spatial.module import DeepColorModule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (the original's defaults: 500 + 500 epochs, Adam 1e-3, batch 1000)."""

    epochs_sc: int = 500
    epochs_map: int = 500
    batch_size: int = 1000  # cells per phase-1 step
    map_batch_size: int = 1000  # cells mixed into every spot per phase-2 step
    lr: float = 1e-3
    # phase 2's learning rate (None: lr). 1e-2: at 1e-3 and 500 one-batch epochs the cell-level
    # maps were still spreading (mapped spread 0.05 of the true one, vs 0.49 at 1e-2; README)
    map_lr: float | None = 1e-2
    kl_warmup: int = 30  # phase-1 epochs over which the KL weight rises from 0 to 1
    holdout: float = 0.05
    early_stopping: bool = True
    patience: int = 25
    min_delta: float = 1e-3  # relative improvement that resets the patience
    sample_z_in_map: bool = False
    seed: int = 42

    def to_dict(self) -> dict:
        return asdict(self)


class Rows:
    """Dense torch batches from a count matrix held dense (small) or as CSR (large)."""

    def __init__(self, x: np.ndarray | sp.spmatrix, device: torch.device, dense_limit: int = 50_000_000) -> None:
        self.n = x.shape[0]
        self.device = device
        if sp.issparse(x) and x.shape[0] * x.shape[1] > dense_limit:
            self.csr, self.dense = sp.csr_matrix(x, dtype=np.float32), None
        else:
            arr = x.toarray() if sp.issparse(x) else np.asarray(x)
            self.csr, self.dense = None, torch.as_tensor(arr, dtype=torch.float32, device=device)

    def __getitem__(self, idx: np.ndarray) -> torch.Tensor:
        if self.dense is not None:
            return self.dense[torch.as_tensor(idx, device=self.device)]
        return torch.as_tensor(self.csr[idx].toarray(), device=self.device)

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Every row, in order, ``size`` at a time."""
        for start in range(0, self.n, size):
            idx = np.arange(start, min(start + size, self.n))
            yield idx, self[idx]


@torch.no_grad()
def log_factorials(rows: Rows, chunk: int = 4096) -> torch.Tensor:
    """Per row: sum over genes of log(x!), the constant the losses leave out. Added back to the
    logged and early-stopping values so they are true negative log-likelihoods, on which a
    relative tolerance means something."""
    return torch.cat([torch.lgamma(x + 1.0).sum(-1) for _, x in rows.chunks(chunk)])


def batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled split into near-equal batches (no tiny last batch that would skew a mixture)."""
    return np.array_split(rng.permutation(n), max(1, math.ceil(n / batch_size)))


class EarlyStopping:
    """Tracks the best evaluation loss and its state; says stop after ``patience`` flat epochs.

    ``last_good`` is the state after the latest finite epoch, restored when a loss turns NaN
    before any best state exists.
    """

    def __init__(self, module: torch.nn.Module, patience: int, min_delta: float, enabled: bool) -> None:
        self.module, self.patience, self.min_delta, self.enabled = module, patience, min_delta, enabled
        self.best = math.inf
        self.best_state: dict | None = None
        self.last_good = copy.deepcopy(module.state_dict())
        self.wait = 0

    def good(self) -> None:
        self.last_good = copy.deepcopy(self.module.state_dict())

    def step(self, value: float) -> bool:
        threshold = self.best - self.min_delta * abs(self.best) if math.isfinite(self.best) else math.inf
        if value < threshold:
            self.best, self.wait = value, 0
            self.best_state = copy.deepcopy(self.module.state_dict())
        else:
            self.wait += 1
        return self.enabled and self.wait >= self.patience

    def restore(self, failed: bool) -> None:
        """After a NaN: the best state, else the last good one. Otherwise the best state when
        early stopping is on (with it off the final state stays, for fixed-epoch comparisons)."""
        if failed:
            self.module.load_state_dict(self.best_state or self.last_good)
        elif self.enabled and self.best_state is not None:
            self.module.load_state_dict(self.best_state)


def run_phase(name: str, module: torch.nn.Module, params: list, epochs: int, cfg: TrainConfig,
               step: Callable[[Adam, int], dict[str, float]], evaluate: Callable[[], float],
               warmup: int = 0, lr: float | None = None) -> list[dict]:
    """The shared epoch loop: Adam fresh per phase, NaN guard, early stopping, progress bar.

    Early stopping (and the best state it restores) starts after ``warmup`` epochs, while the
    objective itself is still changing.
    """
    optimizer = Adam(params, lr=lr if lr is not None else cfg.lr)
    stopper = EarlyStopping(module, cfg.patience, cfg.min_delta, cfg.early_stopping)
    history: list[dict] = []
    failed = False
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc=f"DeepCOLOR {name}", mininterval=2.0, leave=False)
    for epoch in bar:
        parts = step(optimizer, epoch)
        held = evaluate()
        if not all(math.isfinite(v) for v in (*parts.values(), held)):
            log.warning("%s: loss became NaN at epoch %d; restoring the last good state", name, epoch)
            failed = True
            break
        history.append({"phase": name, "epoch": epoch, **parts, "eval_loss": held})
        bar.set_postfix(loss=f"{parts['loss']:.1f}", eval=f"{held:.1f}", refresh=False)
        if epoch >= warmup and stopper.step(held):
            log.info("%s: early stop at epoch %d (best eval loss %.3f)", name, epoch, stopper.best)
            break
        if stopper.best_state is None:
            stopper.good()
    stopper.restore(failed)
    log.info("%s: %d epochs in %.1f s, eval loss %.3f", name, len(history), time.perf_counter() - start,
             stopper.best if math.isfinite(stopper.best) else (history[-1]["eval_loss"] if history else math.nan))
    return history


def _mean_parts(parts: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, float]:
    total = sum(weights)
    return {k: sum(float(p[k]) * w for p, w in zip(parts, weights)) / total for k in parts[0]}


def train_sc(module: DeepColorModule, cells: Rows, cfg: TrainConfig, rng: np.random.Generator) -> list[dict]:
    """Phase 1: the single-cell VAE, early-stopped on the held-out cells' loss.

    With fewer than 40 cells nothing is held out and the training loss is watched instead.
    """
    n_hold = int(round(cfg.holdout * cells.n)) if cells.n >= 40 else 0
    order = rng.permutation(cells.n)
    held, train = np.sort(order[:n_hold]), order[n_hold:]
    held_x = cells[held] if n_hold else None
    last = {"loss": math.inf}
    module.init_rate_scale(cells[train[: min(len(train), 20_000)]])
    const = log_factorials(cells)
    table = CountTable(cells.dense, keep_codes=True) if cells.dense is not None else None

    def step(optimizer: Adam, epoch: int) -> dict[str, float]:
        module.train()
        parts, sizes = [], []
        kl_weight = min(1.0, (epoch + 1) / cfg.kl_warmup) if cfg.kl_warmup > 0 else 1.0
        for idx in batches(len(train), cfg.batch_size, rng):
            rows = torch.as_tensor(train[idx], device=const.device)
            out = module.sc_loss(cells[train[idx]], kl_weight=kl_weight, table=table.rows(rows) if table else None)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            c = const[torch.as_tensor(train[idx], device=const.device)].mean()
            parts.append({"loss": out["loss"].detach() + c, "nll": out["nll"].detach() + c, "kl": out["kl"].detach()})
            sizes.append(len(idx))
        last.update(_mean_parts(parts, sizes))
        return dict(last)

    def evaluate() -> float:
        if held_x is None:
            return last["loss"]
        module.eval()
        with torch.no_grad():
            return float(module.sc_loss(held_x, sample=False)["loss"]) + held_const

    held_const = float(const[torch.as_tensor(held, device=const.device)].mean()) if n_hold else 0.0
    for p in module.map_parameters():
        p.requires_grad_(False)
    try:
        return run_phase("phase 1 (single-cell VAE)", module, module.sc_parameters(), cfg.epochs_sc, cfg, step, evaluate,
                          warmup=cfg.kl_warmup)
    finally:
        for p in module.map_parameters():
            p.requires_grad_(True)


@torch.no_grad()
def posterior(module: DeepColorModule, cells: Rows, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and standard deviation of z for every cell."""
    module.eval()
    means, stds = [], []
    for _, x in cells.chunks(chunk):
        m, s = module.encode(x)
        means.append(m)
        stds.append(s)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def decode(module: DeepColorModule, z: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Decoded rates lambda(z) for every row of z."""
    module.eval()
    return torch.cat([module.decode(z[i:i + chunk]) for i in range(0, len(z), chunk)])


@torch.no_grad()
def map_inputs(module: DeepColorModule, cells: Rows, z: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The map head's input for every cell (z and the cell's expression components)."""
    return torch.cat([module.map_features(x, z[idx[0]:idx[-1] + 1]) for idx, x in cells.chunks(chunk)])


@torch.no_grad()
def map_totals(module: DeepColorModule, features: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Per-spot sum of f_s over every cell: the normaliser of the full mapping."""
    return sum(module.map_scores(features[i:i + chunk]).sum(0) for i in range(0, len(features), chunk))


@torch.no_grad()
def full_mixture(module: DeepColorModule, cells: Rows, z: torch.Tensor, features: torch.Tensor,
                 chunk: int = 4096) -> torch.Tensor:
    """Spots x genes mixture of all cells at once, chunked so no cells x spots matrix is held."""
    totals = map_totals(module, features, chunk)
    mix = torch.zeros(module.config.n_spots, module.config.n_genes, device=z.device)
    for idx, x in cells.chunks(chunk):
        sl = slice(idx[0], idx[-1] + 1)
        mix += (module.map_scores(features[sl]) / totals).T @ module.map_rate(x, z[sl])
    return mix


def train_map(module: DeepColorModule, cells: Rows, spots: torch.Tensor, cfg: TrainConfig,
              rng: np.random.Generator) -> list[dict]:
    """Phase 2: map head, gene scale/offset and spot dispersion with the VAE frozen.

    The expression components the map head reads are fitted first (on up to 20,000 cells).
    Early stopping watches the epoch's mean batch loss: it tracks the full mapping loss (all cells
    mixed at once) within a fraction of a percent, and computing that every epoch would double
    the phase's cost. The full loss is logged once at the end.
    """
    spot_size = spots.mean(1)
    module.init_expression_pcs(cells[rng.permutation(cells.n)[:20_000]])
    z_mean, z_std = posterior(module, cells)
    features = map_inputs(module, cells, z_mean)
    decoded = module.config.map_rate == "decoded"
    rate_mean = decode(module, z_mean) if decoded else None
    k = z_mean.shape[1]
    for p in module.sc_parameters():
        p.requires_grad_(False)
    last = {"loss": math.inf}
    const = float(torch.lgamma(spots + 1.0).sum(-1).mean())
    table = CountTable(spots) if module.config.spatial_likelihood == "nb" else None

    def step(optimizer: Adam, epoch: int) -> dict[str, float]:
        module.train()
        parts, sizes = [], []
        for idx in batches(cells.n, cfg.map_batch_size, rng):
            t = torch.as_tensor(idx, device=z_mean.device)
            feat = features[t]
            if cfg.sample_z_in_map:
                z = z_mean[t] + z_std[t] * torch.randn_like(z_std[t])
                feat = torch.cat([z, feat[:, k:]], dim=-1)
                with torch.no_grad():
                    rate = module.decode(z) if decoded else module.map_rate(cells[idx], z)
            else:
                rate = rate_mean[t] if decoded else module.map_rate(cells[idx], z_mean[t])
            out = module.spatial_loss(feat, rate, spots, spot_size, table)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            parts.append({k: v.detach() + const for k, v in out.items()})
            sizes.append(len(idx))
        last.update(_mean_parts(parts, sizes))
        return dict(last)

    def evaluate() -> float:
        return last["loss"]

    try:
        return run_phase("phase 2 (spatial map)", module, module.map_parameters(), cfg.epochs_map, cfg, step, evaluate,
                         lr=cfg.map_lr)
    finally:
        for p in module.sc_parameters():
            p.requires_grad_(True)


@torch.no_grad()
def mapping_loss(module: DeepColorModule, cells: Rows, spots: torch.Tensor) -> float:
    """Spot NLL with every cell mixed into every spot at once: what the outputs are made from."""
    module.eval()
    z, _ = posterior(module, cells)
    mix = full_mixture(module, cells, z, map_inputs(module, cells, z))
    nll = module.spot_nll(spots, module.spot_mean(mix, spots.mean(1)))
    return float(nll + torch.lgamma(spots + 1.0).sum(-1).mean())


def fit(module: DeepColorModule, cells: Rows, spots: torch.Tensor, cfg: TrainConfig) -> list[dict]:
    """Both phases, seeded; returns the per-epoch history."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    history = train_sc(module, cells, cfg, rng)
    history += train_map(module, cells, spots, cfg, rng)
    log.info("full mapping loss %.3f", mapping_loss(module, cells, spots))
    module.eval()
    return history
