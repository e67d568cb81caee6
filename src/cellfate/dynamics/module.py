"""VICDYF's networks and loss: a torch module that knows nothing about AnnData.

The generative model (Nagaharu, Kojima et al., Cell Reports 2022), for a cell with spliced counts
s and unspliced counts u over G genes:

- a latent state z ~ N(0, I) (``n_latent`` dims) and a latent displacement d~ ~ N(0, I); the
  cell's dynamics are d = ``d_scale`` * d~, drawn around a drift with a cell-state dependent
  diffusion: q(d~|z) = N(drift(z), diffusion(z)^2);
- expected spliced expression lambda_s = dec(z) (an MLP ending in softplus);
- splicing kinetics give the unspliced rate: lambda_u = (ds/dt + gamma * lambda_s) / beta, with
  per-gene positive beta, gamma and ds/dt the decoder's change along d: the exact Jacobian-vector
  product J_dec(z) d (``velocity="jvp"``, as in the later ``exdyn``; forward mode written out, equal
  to ``torch.func.jvp``) or the original's central
  difference dec(z + d) - dec(z - d) without the 1/2 (``velocity="finite_difference"``);
- counts: Poisson (or negative binomial with per-gene dispersion) with mean N_ij * lambda_ij, where
  N = rowsum(S) (outer) colsum(S) rescaled so that mean(N) = mean(S); N factorises into a cell
  factor and a gene factor, which the caller passes per batch so that N is never materialised.

With ``n_condition`` > 0 the dynamics net reads concat(z, c), c a per-cell condition (a one-hot
experimental condition, or colocalization scores with partner cell types): the drift then says how
the environment changes where a cell is heading (:mod:`cellfate.spatial.environment`).

The loss is the negative ELBO: both negative log-likelihoods + KL(q(z|s) || N(0, I)) +
KL(q(d~|z) || N(0, I)), analytic; it is returned as named parts so a training loop can log them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cellfate.nn.layers import mlp
from cellfate.nn.likelihoods import kl_standard_normal, nb_nll, poisson_nll_factored

LIKELIHOODS = ("poisson", "nb")
VELOCITY_MODES = ("jvp", "finite_difference")
#: "posterior": the original's q(d~|z) with a N(0, I) prior; "learnt": a per-cell posterior
#: q(d~|z, u) under a learnt prior p(d~|z) = N(drift(z), diffusion(z)^2) (see VicdyfModule).
DIFFUSION_MODES = ("posterior", "learnt")
#: Sharpness of the smooth positive part applied to the unspliced rate (ds/dt can make it negative).
POSITIVE_SHARPNESS = 100.0


@dataclass(frozen=True)
class VicdyfConfig:
    """Hyper-parameters of :class:`VicdyfModule`; a plain, JSON-serialisable object."""

    n_genes: int
    n_latent: int = 10
    n_hidden: int = 50
    n_layers: int = 2
    likelihood: str = "poisson"
    velocity: str = "jvp"
    d_scale: float = 0.01
    n_condition: int = 0  # width of the condition c the drift also reads (0: none)
    diffusion: str = "posterior"

    def __post_init__(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.velocity not in VELOCITY_MODES:
            raise ValueError(f"velocity must be one of {VELOCITY_MODES}, got {self.velocity!r}")
        if self.diffusion not in DIFFUSION_MODES:
            raise ValueError(f"diffusion must be one of {DIFFUSION_MODES}, got {self.diffusion!r}")
        if min(self.n_genes, self.n_latent, self.n_hidden, self.n_layers) < 1 or self.d_scale <= 0 or self.n_condition < 0:
            raise ValueError(f"sizes and d_scale must be positive: {self}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VicdyfConfig:
        return cls(**values)


class GaussianHead(nn.Module):
    """An MLP with two linear heads: a mean and a softplus standard deviation."""

    def __init__(self, n_in: int, n_out: int, n_hidden: int, n_layers: int) -> None:
        super().__init__()
        self.body = mlp(n_in, n_hidden, n_layers)
        self.mean = nn.Linear(n_hidden, n_out)
        self.scale = nn.Linear(n_hidden, n_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mean(h), F.softplus(self.scale(h)) + 1e-4


class Decoder(nn.Module):
    """z -> expected spliced expression lambda_s (positive, in units of the size-factor matrix)."""

    def __init__(self, n_latent: int, n_genes: int, n_hidden: int, n_layers: int) -> None:
        super().__init__()
        self.body = mlp(n_latent, n_hidden, n_layers)
        self.out = nn.Linear(n_hidden, n_genes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.out(self.body(z)))

    def forward_with_tangent(self, z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dec(z), J_dec(z) t): forward-mode differentiation written out layer by layer.

        Exact, and the same as ``torch.func.jvp(decoder, (z,), (t,))`` (a test checks), but with a
        few plain tensor operations per layer instead of dual tensors: training's hot path.
        """
        h = z
        for layer in self.body:
            if isinstance(layer, nn.Linear):
                h, t = layer(h), F.linear(t, layer.weight)
            elif isinstance(layer, nn.LayerNorm):
                # LN(x) = (x - mean x) / sd x has tangent (t - mean t - LN(x) mean(LN(x) t)) / sd x;
                # the value comes from torch's fused layer_norm, only 1/sd is computed beside it
                inv_sd = torch.rsqrt(torch.var(h, -1, keepdim=True, correction=0) + layer.eps)
                h = F.layer_norm(h, layer.normalized_shape, eps=layer.eps)
                t = torch.addcmul(t - t.mean(-1, keepdim=True), h, (h * t).mean(-1, keepdim=True), value=-1) * inv_sd
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h)
                t = t.masked_fill(h <= 0, 0.0)
            else:
                raise TypeError(f"no tangent rule for {type(layer).__name__}")
        pre = self.out(h)
        return F.softplus(pre), F.linear(t, self.out.weight) * torch.sigmoid(pre)


def kl_normal(mean: torch.Tensor, scale: torch.Tensor, prior_mean: torch.Tensor,
              prior_scale: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, scale^2) || N(prior_mean, prior_scale^2)) summed over the last axis."""
    ratio = scale / prior_scale
    return 0.5 * (ratio.pow(2) + ((mean - prior_mean) / prior_scale).pow(2) - 1.0 - 2.0 * torch.log(ratio)).sum(-1)


def smooth_positive(x: torch.Tensor) -> torch.Tensor:
    """A softplus sharp enough to be x for x >> 0.01, keeping a gradient where x < 0."""
    return F.softplus(x, beta=POSITIVE_SHARPNESS)


class VicdyfModule(nn.Module):
    """Encoder q(z|s), dynamics q(d~|z), decoder, kinetics and likelihoods of VICDYF."""

    def __init__(self, config: VicdyfConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = GaussianHead(c.n_genes, c.n_latent, c.n_hidden, c.n_layers)
        self.dynamics = GaussianHead(c.n_latent + c.n_condition, c.n_latent, c.n_hidden, c.n_layers)
        self.decoder = Decoder(c.n_latent, c.n_genes, c.n_hidden, c.n_layers)
        if c.diffusion == "learnt":  # q(d~|z, c, u): reads the cell's own unspliced counts
            self.displacement_encoder = GaussianHead(c.n_latent + c.n_condition + c.n_genes, c.n_latent,
                                                     c.n_hidden, c.n_layers)
        self.raw_beta = nn.Parameter(torch.zeros(c.n_genes))
        self.raw_gamma = nn.Parameter(torch.zeros(c.n_genes))
        if c.likelihood == "nb":
            self.log_theta_s = nn.Parameter(torch.full((c.n_genes,), 2.0))
            self.log_theta_u = nn.Parameter(torch.full((c.n_genes,), 2.0))

    @torch.no_grad()
    def init_kinetics(self, ratio: torch.Tensor, beta: float) -> None:
        """Start at steady state: gamma / beta = the gene's unspliced/spliced ratio, beta = ``beta``.

        With d of order ``d_scale``, ds/dt = J d is small against gamma * lambda_s unless beta is
        small too: lambda_u = ds/dt / beta + (gamma / beta) lambda_s. The smaller the starting
        beta, the harder the unspliced counts pin each cell's displacement: the velocity sharpens,
        but so does the penalty on diffusion everywhere, and the fluctuation flattens along the
        trajectory. The measured trade-off, on the project's simulator and on two it was not
        designed on, is in benchmarks/README.md (section "VICDYF"); :class:`~cellfate.dynamics.model.VICDYF`
        starts at 0.1, the best velocity on all three.
        """
        def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
            return x + torch.log(-torch.expm1(-x))

        b = torch.full_like(self.raw_beta, beta)
        g = (b * ratio.to(b)).clamp_min(1e-6)
        self.raw_beta.copy_(inverse_softplus(b))
        self.raw_gamma.copy_(inverse_softplus(g))

    @property
    def beta(self) -> torch.Tensor:
        return F.softplus(self.raw_beta)

    @property
    def gamma(self) -> torch.Tensor:
        return F.softplus(self.raw_gamma)

    def kinetic_parameters(self) -> list[nn.Parameter]:
        """Parameters used only by the unspliced term (frozen with the dynamics net in phase 1)."""
        extra = [self.log_theta_u] if self.config.likelihood == "nb" else []
        if self.config.diffusion == "learnt":
            extra += list(self.displacement_encoder.parameters())
        return [self.raw_beta, self.raw_gamma, *extra]

    def encode(self, s: torch.Tensor, log_s: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|s): mean and standard deviation. The encoder sees log1p counts, which keeps the
        first layer's input on one scale whatever the library size (the likelihood sees raw counts).
        ``log_s`` is log1p(s) when the caller has it already: training computes it once per cell
        instead of once per batch (a log over every batch was ~3% of a step)."""
        return self.encoder(torch.log1p(s) if log_s is None else log_s)

    def dynamics_posterior(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(d~|z, c): drift (mean) and diffusion (standard deviation) of the unscaled displacement."""
        if self.config.n_condition:
            if condition is None or condition.shape[-1] != self.config.n_condition:
                raise ValueError(f"the dynamics net needs a condition of width {self.config.n_condition}")
            z = torch.cat([z, condition], dim=-1)
        return self.dynamics(z)

    def drift(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The drift alone (what the environment analysis differentiates with respect to c)."""
        return self.dynamics_posterior(z, condition)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """lambda_s = dec(z)."""
        return self.decoder(z)

    def rate_and_velocity(self, z: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lambda_s = dec(z) and ds/dt along d: exact J_dec(z) d, or dec(z + d) - dec(z - d)."""
        if self.config.velocity == "jvp":
            return self.decoder.forward_with_tangent(z, d)
        return self.decoder(z), self.decoder(z + d) - self.decoder(z - d)

    def unspliced_rate(self, s_rate: torch.Tensor, ds_dt: torch.Tensor) -> torch.Tensor:
        """lambda_u = (ds/dt + gamma lambda_s) / beta = ds/dt / beta + (gamma / beta) lambda_s, kept
        positive; written with the per-gene ratios so that it is two passes over the batch, not four."""
        beta = self.beta
        return smooth_positive(torch.addcmul((self.gamma / beta) * s_rate, ds_dt, beta.reciprocal()))

    def _displacement(self, z: torch.Tensor, u: torch.Tensor, condition: torch.Tensor | None,
                      sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A displacement d~ for each cell and its KL term (batch mean).

        ``diffusion="posterior"`` (the original): d~ ~ q(d~|z) = N(drift(z), diffusion(z)^2), KL to
        N(0, I). The diffusion is then a posterior uncertainty; as q cannot see u, it is fitted to
        all cells of a state at once and its variance follows the likelihood's curvature, not how
        much those cells' futures disagree (with d = 0.01 d~ it stays at the prior).
        ``diffusion="learnt"``: each cell's own d~ ~ q(d~|z, u), and the dynamics net is the
        prior p(d~|z) = N(drift(z), diffusion(z)^2): maximising E_q log p(d~|z) makes the drift the
        mean and the diffusion the spread of the displacements of cells in the same state, the
        fluctuation the paper reads (high where cells of one state head to different fates).
        """
        drift, diffusion = self.dynamics_posterior(z, condition)
        if self.config.diffusion == "posterior":
            d_tilde = drift + diffusion * torch.randn_like(diffusion) if sample else drift
            return d_tilde, kl_standard_normal(drift, diffusion).mean()
        inputs = z if condition is None or not self.config.n_condition else torch.cat([z, condition], dim=-1)
        q_mean, q_scale = self.displacement_encoder(torch.cat([inputs, torch.log1p(u)], dim=-1))
        d_tilde = q_mean + q_scale * torch.randn_like(q_scale) if sample else q_mean
        return d_tilde, kl_normal(q_mean, q_scale, drift, diffusion).mean()

    def _nll(self, x: torch.Tensor, rate: torch.Tensor, cell_factor: torch.Tensor, gene_factor: torch.Tensor,
             which: str) -> torch.Tensor:
        """-log p(x | mean N * rate) per cell, N_ij = cell_factor_i * gene_factor_j."""
        if self.config.likelihood == "poisson":
            return poisson_nll_factored(x, rate, cell_factor, gene_factor)
        theta = torch.exp(self.log_theta_s if which == "s" else self.log_theta_u)
        return nb_nll(x, cell_factor[:, None] * gene_factor[None, :] * rate, theta)

    def loss(
        self,
        s: torch.Tensor,
        u: torch.Tensor,
        cell_factor: torch.Tensor,
        gene_factor: torch.Tensor,
        condition: torch.Tensor | None = None,
        *,
        log_s: torch.Tensor | None = None,
        use_unspliced: bool = True,
        sample: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Negative ELBO per cell, averaged over the batch, as named parts (``total`` is their sum).

        ``cell_factor`` (cells) and ``gene_factor`` (genes) are the two factors of the size-factor
        matrix N; ``condition`` is c (cells x ``n_condition``) when the drift reads one; ``log_s`` is
        log1p(s) if precomputed (see :meth:`encode`). ``use_unspliced=False`` is the first training
        phase: the VAE alone (spliced
        likelihood and KL(z)). ``sample=False`` uses posterior means (a deterministic evaluation).
        The log(x!) constants are left out: they do not change the optimum.
        """
        qz_mean, qz_scale = self.encode(s, log_s)
        z = qz_mean + qz_scale * torch.randn_like(qz_scale) if sample else qz_mean
        parts = {"kl_z": kl_standard_normal(qz_mean, qz_scale).mean()}
        if not use_unspliced:
            s_rate = self.decoder(z)
            parts["nll_s"] = self._nll(s, s_rate, cell_factor, gene_factor, "s").mean()
        else:
            d_tilde, parts["kl_d"] = self._displacement(z, u, condition, sample)
            s_rate, ds_dt = self.rate_and_velocity(z, self.config.d_scale * d_tilde)
            u_rate = self.unspliced_rate(s_rate, ds_dt)
            parts["nll_s"] = self._nll(s, s_rate, cell_factor, gene_factor, "s").mean()
            parts["nll_u"] = self._nll(u, u_rate, cell_factor, gene_factor, "u").mean()
        parts["total"] = sum(parts.values())
        return parts
