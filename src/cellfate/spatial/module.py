"""DeepCOLOR's torch networks and losses; nothing here knows about AnnData.

A single-cell VAE (negative binomial, per-gene dispersion, size factor = per-cell mean count)
learns a latent z per cell; a map head f(z) gives each cell one positive score per spot. Within a
set of cells the scores are normalised over the cells, so each spot is a mixture of those cells,
and the mixture's expression (with a per-gene scale and offset) must explain the spot counts.
Losses return named parts so the training loop can log them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModuleConfig:
    """Network sizes; plain and serialisable so a saved model rebuilds exactly."""

    n_genes: int
    n_spots: int
    n_latent: int = 10
    n_hidden: int = 50
    spatial_likelihood: str = "nb"  # "nb" or "poisson"

    def to_dict(self) -> dict:
        return asdict(self)


def mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    """Two hidden blocks (Linear, LayerNorm without affine, ReLU), then a linear output."""
    return nn.Sequential(
        nn.Linear(n_in, n_hidden), nn.LayerNorm(n_hidden, elementwise_affine=False), nn.ReLU(),
        nn.Linear(n_hidden, n_hidden), nn.LayerNorm(n_hidden, elementwise_affine=False), nn.ReLU(),
        nn.Linear(n_hidden, n_out),
    )


def nb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8,
                constant: bool = True) -> torch.Tensor:
    """Negative-binomial log-likelihood, mean ``mu`` and inverse dispersion ``theta`` (elementwise).

    ``constant=False`` leaves out -log(x!), which does not depend on the parameters: the losses
    skip it, saving one lgamma over every count of every step.
    """
    log_theta_mu = torch.log(theta + mu + eps)
    out = (
        torch.lgamma(x + theta) - torch.lgamma(theta)
        + theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
    )
    return out - torch.lgamma(x + 1.0) if constant else out


def poisson_log_prob(x: torch.Tensor, mu: torch.Tensor, eps: float = 1e-8, constant: bool = True) -> torch.Tensor:
    """Poisson log-likelihood (elementwise); ``constant=False`` leaves out -log(x!)."""
    out = x * torch.log(mu + eps) - mu
    return out - torch.lgamma(x + 1.0) if constant else out


def kl_standard_normal(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std) || N(0, I)) summed over the latent dimensions (per cell)."""
    return 0.5 * (mean.pow(2) + std.pow(2) - 1.0 - 2.0 * torch.log(std)).sum(-1)


class DeepColorModule(nn.Module):
    """Encoder, decoder, map head and the spot-likelihood parameters."""

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__()
        if config.spatial_likelihood not in ("nb", "poisson"):
            raise ValueError(f"spatial_likelihood must be 'nb' or 'poisson', not {config.spatial_likelihood!r}")
        self.config = config
        g, h, k = config.n_genes, config.n_hidden, config.n_latent
        self.encoder = mlp(g, h, 2 * k)
        self.decoder = mlp(k, h, g)
        # theta starts at 10 (mild overdispersion): starting at 1 lets the dispersion absorb the
        # differences between cell types before the decoder learns to use z (posterior collapse)
        self.sc_log_theta = nn.Parameter(torch.full((g,), 2.3))
        # Per-gene rate scale, set from the data before training (init_rate_scale). Gene rates span
        # orders of magnitude and softplus is linear for large inputs, so without it the decoder
        # needs thousands of steps just to reach each gene's mean, and meanwhile the dispersion
        # absorbs every difference between cells and the posterior collapses onto the prior.
        self.register_buffer("rate_scale", torch.ones(g))
        self.map_head = mlp(k, h, config.n_spots)
        # softplus(-3) ~ 0.05: spots start explained by the cells, not by the background offset
        self.raw_gene_scale = nn.Parameter(torch.full((g,), 0.5413))  # softplus -> 1
        self.raw_gene_offset = nn.Parameter(torch.full((g,), -3.0))
        self.sp_log_theta = nn.Parameter(torch.zeros(g))

    # --- the parts -------------------------------------------------------------------------
    def sc_parameters(self) -> list[nn.Parameter]:
        """What phase 1 trains: the single-cell VAE."""
        return [*self.encoder.parameters(), *self.decoder.parameters(), self.sc_log_theta]

    def map_parameters(self) -> list[nn.Parameter]:
        """What phase 2 trains: the map head, gene scale/offset and spot dispersion."""
        return [*self.map_head.parameters(), self.raw_gene_scale, self.raw_gene_offset, self.sp_log_theta]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation of z from raw counts (log-normalised inside)."""
        total = x.sum(-1, keepdim=True).clamp_min(1.0)
        h = self.encoder(torch.log1p(x * (1e4 / total)))
        mean, raw_std = h.chunk(2, dim=-1)
        return mean, F.softplus(raw_std) + 1e-4

    @torch.no_grad()
    def init_rate_scale(self, x: torch.Tensor) -> None:
        """Start the decoder at each gene's mean rate (relative to the cells' mean counts)."""
        rel = (x / x.mean(-1, keepdim=True).clamp_min(1e-8)).mean(0)
        self.rate_scale.copy_(rel.clamp_min(1e-4) / F.softplus(torch.zeros(())))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Per-gene rate relative to the cell's mean count (lambda): a fold change on the gene's mean."""
        return F.softplus(self.decoder(z)) * self.rate_scale

    def map_scores(self, z: torch.Tensor) -> torch.Tensor:
        """f(z): one positive score per spot (cells x spots)."""
        return F.softplus(self.map_head(z)) + 1e-8

    # --- losses ----------------------------------------------------------------------------
    def sc_loss(self, x: torch.Tensor, sample: bool = True, kl_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """Negative ELBO per cell (mean over the batch, without log(x!)), with its reconstruction and KL parts.

        ``sample=False`` decodes the posterior mean: a deterministic value for early stopping.
        ``kl_weight`` < 1 during warm-up keeps the posterior from collapsing onto the prior before
        the decoder has learnt to use z (the per-gene dispersion would otherwise absorb the
        cell-type differences and every cell would decode to the same profile).
        """
        mean, std = self.encode(x)
        z = mean + std * torch.randn_like(std) if sample else mean
        size = x.mean(-1, keepdim=True)
        mu = size * self.decode(z)
        nll = -nb_log_prob(x, mu, self.sc_log_theta.exp(), constant=False).sum(-1).mean()
        kl = kl_standard_normal(mean, std).mean()
        return {"loss": nll + kl_weight * kl, "nll": nll, "kl": kl}

    def spot_mixture(self, scores: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        """Spots x genes expression of each spot's mixture of the given cells.

        ``scores`` (cells x spots) are normalised over the cells: within a batch, every spot is
        explained by the batch's cells only, which keeps a step's cost linear in the batch.
        """
        p = scores / scores.sum(0, keepdim=True)
        return p.T @ rate

    def spot_mean(self, mixture: torch.Tensor, spot_size: torch.Tensor) -> torch.Tensor:
        """Spot size x (mixture x gene scale + gene offset)."""
        return spot_size[:, None] * (mixture * F.softplus(self.raw_gene_scale) + F.softplus(self.raw_gene_offset))

    def spot_nll(self, spots: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of the spot counts (without log(x!)), summed over genes, mean over spots."""
        if self.config.spatial_likelihood == "poisson":
            ll = poisson_log_prob(spots, mu, constant=False)
        else:
            ll = nb_log_prob(spots, mu, self.sp_log_theta.exp(), constant=False)
        return -ll.sum(-1).mean()

    def spatial_loss(self, z: torch.Tensor, rate: torch.Tensor, spots: torch.Tensor,
                     spot_size: torch.Tensor) -> dict[str, torch.Tensor]:
        """Spot likelihood of the mixture of a batch of cells (latent ``z``, rates ``rate``)."""
        mu = self.spot_mean(self.spot_mixture(self.map_scores(z), rate), spot_size)
        nll = self.spot_nll(spots, mu)
        return {"loss": nll, "nll": nll}
