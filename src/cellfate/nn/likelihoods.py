"""Count likelihoods and the Gaussian KL of the variational models, written once.

Every function is elementwise or sums over the last axis only, so the models choose how to reduce
over cells, spots and batches. ``constant=False`` leaves out -log(x!), which does not depend on the
parameters: the training losses skip it (one lgamma fewer over every count of every step) and add
it back only where a true log-likelihood is reported.
"""

from __future__ import annotations

import torch

EPS = 1e-8


def nb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = EPS,
                constant: bool = True) -> torch.Tensor:
    """Negative-binomial log-likelihood, mean ``mu`` and inverse dispersion ``theta`` (elementwise)."""
    log_theta_mu = torch.log(theta + mu + eps)
    out = (
        torch.lgamma(x + theta) - torch.lgamma(theta)
        + theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
    )
    return out - torch.lgamma(x + 1.0) if constant else out


def poisson_log_prob(x: torch.Tensor, mu: torch.Tensor, eps: float = EPS, constant: bool = True) -> torch.Tensor:
    """Poisson log-likelihood (elementwise)."""
    out = x * torch.log(mu + eps) - mu
    return out - torch.lgamma(x + 1.0) if constant else out


def nb_nll(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """-log NB(x | mean mu, inverse dispersion theta) summed over the last axis, without log(x!)."""
    return -nb_log_prob(x, mu, theta, constant=False).sum(-1)


def poisson_nll(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """-log Poisson(x | mu) summed over the last axis, without log(x!)."""
    return -poisson_log_prob(x, mu, constant=False).sum(-1)


def poisson_nll_factored(x: torch.Tensor, rate: torch.Tensor, cell_factor: torch.Tensor,
                         gene_factor: torch.Tensor) -> torch.Tensor:
    """:func:`poisson_nll` of mean mu_ij = cell_i * gene_j * rate_ij, without forming mu.

    sum_j mu_ij = cell_i * (rate_i . gene) is one matrix-vector product, and
    x log mu = x log rate + x (log cell_i + log gene_j), whose second part does not depend on the
    model: it is computed from the counts alone (no gradient). Two fewer passes over the cells x
    genes block forward and backward than forming N * rate, the loss's hottest path. The small
    constant guarding log(0) sits on the rate here (log(rate + eps)) rather than on mu, and on the
    factors (a cell with no counts has factor 0: its loss stays finite, as with mu + eps).
    """
    with torch.no_grad():
        log_size_part = x.sum(-1) * torch.log(cell_factor.clamp_min(EPS)) + x @ torch.log(gene_factor.clamp_min(EPS))
    return cell_factor * (rate @ gene_factor) - (x * torch.log(rate + EPS)).sum(-1) - log_size_part


def kl_standard_normal(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(0, I)) summed over the last (latent) axis: analytic, per cell."""
    return 0.5 * (mean.pow(2) + std.pow(2) - 1.0 - 2.0 * torch.log(std)).sum(-1)
