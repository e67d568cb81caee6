"""Environment-dependent dynamics: how a cell's neighbours change where its state is heading.

The dynamics network of VICDYF takes concat(z, c), with c the cell's condition: here each cell's
colocalization score with every partner cell type from DeepCOLOR (log2 mean overlap ratio with the
type's cells, standardised), or any per-cell condition matrix (e.g. one-hot experimental
conditions). The effect of the environment is the Jacobian of the drift with respect to c, stacked
over cells and decomposed by SVD: each mode is a direction in partner space (partner weights)
with the latent drift change it causes; pushed through the decoder, a mode gives the velocity
change it induces per gene, and crossed with a ligand-target matrix, the ligands that would cause
it (weighted by how much the partner expresses them).

:mod:`cellfate.dynamics` (VICDYF) has no condition input yet, so this module carries its own
small conditioned model with VICDYF's structure (encoder, drift/diffusion head, decoder, splicing
kinetics u = (J_dec(z) d + gamma s) / beta, Poisson likelihoods, two phases). The analysis
functions only need a :class:`ConditionedDrift` (``drift(z, c)`` and ``decode(z)``): once VICDYF
accepts a condition, an adapter to that protocol is all the switch takes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cellfate.errors import CellfateError
from cellfate.spatial import train as training
from cellfate.spatial.module import kl_standard_normal, mlp

log = logging.getLogger(__name__)


class ConditionedDrift(Protocol):
    """What the environment analysis needs from a dynamics model."""

    def drift(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class EnvironmentConfig:
    """Model and training settings of the conditioned dynamics."""

    n_latent: int = 8
    n_hidden: int = 50
    epochs_vae: int = 100
    epochs_dynamics: int = 100
    batch_size: int = 128
    lr: float = 3e-3
    patience: int = 20
    seed: int = 42

    def train_config(self) -> training.TrainConfig:
        return training.TrainConfig(lr=self.lr, patience=self.patience, seed=self.seed, kl_warmup=0)

    def to_dict(self) -> dict:
        return asdict(self)


def poisson_nll(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """-log Poisson without the log(x!) constant, summed over genes, mean over cells."""
    return (mu - x * torch.log(mu + 1e-8)).sum(-1).mean()


class ConditionedDynamicsModule(nn.Module):
    """VICDYF's blocks with a drift conditioned on c: q(d|z, c) = N(drift(z, c), diffusion(z, c)^2)."""

    def __init__(self, n_genes: int, n_condition: int, n_latent: int = 8, n_hidden: int = 50) -> None:
        super().__init__()
        self.encoder = mlp(n_genes, n_hidden, 2 * n_latent)
        self.decoder = mlp(n_latent, n_hidden, n_genes)
        self.dynamics = mlp(n_latent + n_condition, n_hidden, 2 * n_latent)
        self.raw_beta = nn.Parameter(torch.zeros(n_genes))
        self.raw_gamma = nn.Parameter(torch.full((n_genes,), -1.0))
        self.register_buffer("rate_scale", torch.ones(n_genes))  # as in DeepCOLOR: start at each gene's mean

    def vae_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    def encode(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = s.sum(-1, keepdim=True).clamp_min(1.0)
        mean, raw = self.encoder(torch.log1p(s * (1e4 / total))).chunk(2, dim=-1)
        return mean, F.softplus(raw) + 1e-4

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.decoder(z)) * self.rate_scale

    def drift_posterior(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.dynamics(torch.cat([z, c], dim=-1)).chunk(2, dim=-1)
        return mean, F.softplus(raw) + 1e-4

    def drift(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.drift_posterior(z, c)[0]

    def loss(self, s: torch.Tensor, u: torch.Tensor, c: torch.Tensor, dynamics: bool,
             sample: bool = True) -> dict[str, torch.Tensor]:
        """Negative ELBO parts; ``dynamics=False`` is phase 1 (the VAE on spliced counts only)."""
        mean, std = self.encode(s)
        z = mean + std * torch.randn_like(std) if sample else mean
        size = s.mean(-1, keepdim=True).clamp_min(1e-3)
        parts = {"kl_z": kl_standard_normal(mean, std).mean()}
        if not dynamics:
            parts["nll_s"] = poisson_nll(s, size * self.decode(z))
        else:
            d_mean, d_std = self.drift_posterior(z, c)
            d = d_mean + d_std * torch.randn_like(d_std) if sample else d_mean
            rate, ds_dt = torch.func.jvp(self.decode, (z,), (d,))
            u_rate = F.softplus((ds_dt + F.softplus(self.raw_gamma) * rate) / F.softplus(self.raw_beta), beta=100.0)
            parts["nll_s"] = poisson_nll(s, size * rate)
            parts["nll_u"] = poisson_nll(u, size * u_rate)
            parts["kl_d"] = kl_standard_normal(d_mean, d_std).mean()
        parts["loss"] = sum(parts.values())
        return parts


def fit_conditioned_dynamics(spliced: np.ndarray, unspliced: np.ndarray, condition: np.ndarray,
                             cfg: EnvironmentConfig = EnvironmentConfig()) -> ConditionedDynamicsModule:
    """Two phases as VICDYF: the VAE alone, then everything; early stopping on held-out cells."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    s = torch.as_tensor(spliced, dtype=torch.float32)
    u = torch.as_tensor(unspliced, dtype=torch.float32)
    c = torch.as_tensor(condition, dtype=torch.float32)
    module = ConditionedDynamicsModule(s.shape[1], c.shape[1], cfg.n_latent, cfg.n_hidden)
    with torch.no_grad():
        module.rate_scale.copy_((s / s.mean(-1, keepdim=True).clamp_min(1e-3)).mean(0).clamp_min(1e-4) / math.log(2.0))
    order = rng.permutation(len(s))
    n_hold = max(1, int(0.05 * len(s))) if len(s) >= 40 else 0
    held, train = order[:n_hold], order[n_hold:]
    tcfg = cfg.train_config()

    def phase(name: str, params: list, epochs: int, dynamics: bool) -> None:
        def step(optimizer: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
            module.train()
            totals: dict[str, float] = {}
            for idx in training.batches(len(train), cfg.batch_size, rng):
                b = torch.as_tensor(train[idx])
                out = module.loss(s[b], u[b], c[b], dynamics)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimizer.step()
                for k, v in out.items():
                    totals[k] = totals.get(k, 0.0) + float(v.detach()) * len(idx) / len(train)
            return totals

        def evaluate() -> float:
            if not n_hold:
                return 0.0
            module.eval()
            with torch.no_grad():
                h = torch.as_tensor(held)
                return float(module.loss(s[h], u[h], c[h], dynamics, sample=False)["loss"])

        training.run_phase(name, module, params, epochs, tcfg, step, evaluate)

    phase("environment phase 1 (VAE)", module.vae_parameters(), cfg.epochs_vae, dynamics=False)
    phase("environment phase 2 (dynamics)", list(module.parameters()), cfg.epochs_dynamics, dynamics=True)
    module.eval()
    return module


@torch.no_grad()
def latent_mean(module: ConditionedDynamicsModule, spliced: np.ndarray) -> torch.Tensor:
    return module.encode(torch.as_tensor(spliced, dtype=torch.float32))[0]


def condition_jacobian(model: ConditionedDrift, z: torch.Tensor, c: torch.Tensor) -> np.ndarray:
    """Cells x latent x conditions: d drift / d c at every cell (one batched reverse pass per latent axis)."""
    c = c.clone().requires_grad_(True)
    drift = model.drift(z, c)
    rows = [torch.autograd.grad(drift[:, k].sum(), c, retain_graph=True)[0] for k in range(drift.shape[1])]
    return torch.stack(rows, dim=1).detach().cpu().numpy()


def environment_modes(jacobian: np.ndarray, partners: list[str], n_modes: int = 3) -> pd.DataFrame:
    """SVD of the stacked Jacobian ((cells x latent) x partners): modes with partner weights.

    Each mode's sign is set so that its largest-magnitude partner weight is positive: the mode
    then reads "more colocalization with that partner".
    """
    stacked = jacobian.reshape(-1, jacobian.shape[-1])
    _, sv, vt = np.linalg.svd(stacked, full_matrices=False)
    explained = sv**2 / max((sv**2).sum(), 1e-30)
    rows = []
    for k in range(min(n_modes, len(sv))):
        w = vt[k] * np.sign(vt[k][np.argmax(np.abs(vt[k]))])
        for name, weight in zip(partners, w):
            rows.append((k + 1, sv[k], explained[k], name, weight, abs(weight)))
    return pd.DataFrame(rows, columns=["mode", "singular_value", "explained", "partner", "weight", "abs_weight"])


def velocity_change(model: ConditionedDrift, z: torch.Tensor, jacobian: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Per gene: mean over cells of J_dec(z) (J_c direction), the velocity change the mode induces."""
    dz = torch.as_tensor(jacobian @ direction, dtype=torch.float32)  # cells x latent
    _, dv = torch.func.jvp(model.decode, (z,), (dz,))
    return dv.mean(0).detach().cpu().numpy()


def ligand_scores(change: pd.Series, ligand_target: pd.DataFrame, partner_expression: pd.Series | None = None) -> pd.DataFrame:
    """Ligands ranked by sum_g potential(g, L) x max(velocity change_g, 0), times the partner's
    expression of L when known (a ligand the partner does not make cannot be the signal)."""
    genes = change.index.intersection(ligand_target.index)
    if len(genes) == 0:
        raise CellfateError("no gene of the dynamics model is a target in the ligand-target matrix")
    up = np.maximum(change.loc[genes].to_numpy(), 0.0)
    w = ligand_target.loc[genes]
    target_score = pd.Series(w.to_numpy().T @ up / max(up.sum(), 1e-30), index=w.columns)
    out = pd.DataFrame({"ligand": w.columns, "target_score": target_score.to_numpy()})
    expr = partner_expression.reindex(w.columns) if partner_expression is not None else None
    out["partner_expression"] = np.nan if expr is None else expr.to_numpy()
    out["score"] = out["target_score"] * (1.0 if expr is None else out["partner_expression"].fillna(0.0))
    return out.sort_values("score", ascending=False, ignore_index=True)


def colocalization_condition(p_lineage: np.ndarray, p_partners: np.ndarray, partner_labels: np.ndarray,
                             partners: list[str]) -> np.ndarray:
    """Cells x partners: log2 of the mean overlap ratio with each partner type's cells
    (= mean over the type's cells of 2^C_ij), exact from the type's summed distribution."""
    n_spots = p_lineage.shape[1]
    out = np.empty((len(p_lineage), len(partners)))
    for k, name in enumerate(partners):
        sel = partner_labels == name
        if not sel.any():
            raise CellfateError(f"no cell of partner type {name!r} in the reference")
        mean_p = np.asarray(p_partners[sel], dtype=np.float64).mean(0)
        out[:, k] = np.log2(np.maximum(np.asarray(p_lineage, dtype=np.float64) @ mean_p, 1e-300) * n_spots)
    return out


def standardise(c: np.ndarray) -> np.ndarray:
    """Per column to mean 0, sd 1, so Jacobian columns are per standard deviation of each partner."""
    return (c - c.mean(0)) / np.maximum(c.std(0), 1e-12)
