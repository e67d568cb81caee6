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

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
import torch

from cellfate.counts import dense
from cellfate.nn.adam import Adam
from cellfate.nn.training import Phase, Stopping, fit_batches, run_phase
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

    def __init__(self, x: np.ndarray | sp.spmatrix, device: torch.device, dense_limit: int = 50_000_000,
                 codes: np.ndarray | None = None) -> None:
        self.n = x.shape[0]
        self.device = device
        # each row's cell-type index (for a map head that reads within-type components), or None
        self.codes = None if codes is None else torch.as_tensor(np.asarray(codes), dtype=torch.long, device=device)
        if sp.issparse(x) and x.shape[0] * x.shape[1] > dense_limit:
            self.csr, self.dense = sp.csr_matrix(x, dtype=np.float32), None
        else:
            self.csr, self.dense = None, torch.as_tensor(dense(x), device=device)

    def __getitem__(self, idx: np.ndarray) -> torch.Tensor:
        if self.dense is not None:
            return self.dense[torch.as_tensor(idx, device=self.device)]
        return torch.as_tensor(self.csr[idx].toarray(), device=self.device)

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Every row, in order, ``size`` at a time."""
        for start in range(0, self.n, size):
            idx = np.arange(start, min(start + size, self.n))
            yield idx, self[idx]

    def codes_of(self, idx: np.ndarray) -> torch.Tensor | None:
        """The type codes of these rows (None when the rows carry none)."""
        return None if self.codes is None else self.codes[torch.as_tensor(idx, device=self.device)]


@torch.no_grad()
def log_factorials(rows: Rows, chunk: int = 4096) -> torch.Tensor:
    """Per row: sum over genes of log(x!), the constant the losses leave out. Added back to the
    logged and early-stopping values so they are true negative log-likelihoods, on which a
    relative tolerance means something."""
    return torch.cat([torch.lgamma(x + 1.0).sum(-1) for _, x in rows.chunks(chunk)])


def batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled split into near-equal batches (no tiny last batch that would skew a mixture)."""
    return np.array_split(rng.permutation(n), max(1, math.ceil(n / batch_size)))


def _stopping(cfg: TrainConfig) -> Stopping:
    return Stopping(patience=cfg.patience, min_delta=cfg.min_delta, enabled=cfg.early_stopping)


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

    def batch_table(idx: np.ndarray) -> CountTable | None:
        return table.rows(torch.as_tensor(train[idx], device=const.device)) if table is not None else None

    def step(optimizer: Adam, epoch: int) -> dict[str, float]:
        module.train()
        kl_weight = min(1.0, (epoch + 1) / cfg.kl_warmup) if cfg.kl_warmup > 0 else 1.0
        split = batches(len(train), cfg.batch_size, rng)
        out = fit_batches(optimizer, (module.sc_loss(cells[train[idx]], kl_weight=kl_weight, table=batch_table(idx))
                                      for idx in split), "loss")
        parts = []
        for idx, p in zip(split, out):
            c = const[torch.as_tensor(train[idx], device=const.device)].mean()
            parts.append({"loss": p["loss"] + c, "nll": p["nll"] + c, "kl": p["kl"]})
        last.update(_mean_parts(parts, [len(idx) for idx in split]))
        return dict(last)

    def evaluate() -> float:
        if held_x is None:
            return last["loss"]
        module.eval()
        with torch.no_grad():
            return float(module.sc_loss(held_x, sample=False)["loss"]) + held_const

    held_const = float(const[torch.as_tensor(held, device=const.device)].mean()) if n_hold else 0.0
    phase = Phase("DeepCOLOR phase 1 (single-cell VAE)", module.sc_parameters(), cfg.epochs_sc, cfg.lr, step, evaluate,
                  warmup=cfg.kl_warmup, label="phase 1 (single-cell VAE)")
    return run_phase(module, phase, _stopping(cfg))[0]


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
    return torch.cat([module.map_features(x, z[idx[0]:idx[-1] + 1], cells.codes_of(idx))
                      for idx, x in cells.chunks(chunk)])


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
    sample = rng.permutation(cells.n)[:20_000]
    module.init_expression_pcs(cells[sample])
    if module.config.n_type_pcs:
        module.init_type_pcs(cells[sample], cells.codes_of(sample))
    z_mean, z_std = posterior(module, cells)
    features = map_inputs(module, cells, z_mean)
    decoded = module.config.map_rate == "decoded"
    rate_mean = decode(module, z_mean) if decoded else None
    k = z_mean.shape[1]
    last = {"loss": math.inf}
    const = float(torch.lgamma(spots + 1.0).sum(-1).mean())
    table = CountTable(spots) if module.config.spatial_likelihood == "nb" else None

    def losses(split: list[np.ndarray]) -> Iterator[dict[str, torch.Tensor]]:
        for idx in split:
            t = torch.as_tensor(idx, device=z_mean.device)
            feat = features[t]
            if cfg.sample_z_in_map:
                z = z_mean[t] + z_std[t] * torch.randn_like(z_std[t])
                feat = torch.cat([z, feat[:, k:]], dim=-1)
                with torch.no_grad():
                    rate = module.decode(z) if decoded else module.map_rate(cells[idx], z)
            else:
                rate = rate_mean[t] if decoded else module.map_rate(cells[idx], z_mean[t])
            yield module.spatial_loss(feat, rate, spots, spot_size, table)

    def step(optimizer: Adam, epoch: int) -> dict[str, float]:
        module.train()
        split = batches(cells.n, cfg.map_batch_size, rng)
        out = fit_batches(optimizer, losses(split), "loss")
        last.update(_mean_parts([{name: v + const for name, v in p.items()} for p in out], [len(idx) for idx in split]))
        return dict(last)

    phase = Phase("DeepCOLOR phase 2 (spatial map)", module.map_parameters(), cfg.epochs_map,
                  cfg.map_lr if cfg.map_lr is not None else cfg.lr, step, lambda: last["loss"],
                  label="phase 2 (spatial map)")
    return run_phase(module, phase, _stopping(cfg))[0]


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
