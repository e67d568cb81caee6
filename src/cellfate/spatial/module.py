"""DeepCOLOR's torch networks and losses; nothing here knows about AnnData.

A single-cell VAE (negative binomial, per-gene dispersion, size factor = per-cell mean count)
learns a latent z per cell; a map head f gives each cell one positive score per spot. Within a
set of cells the scores are normalised over the cells, so each spot is a mixture of those cells,
and the mixture's expression (with a per-gene scale and offset) must explain the spot counts.

Two departures from the original keep each cell's own place (measured in benchmarks/README.md):
the map head reads z *and* the cell's leading expression components (``n_expression_pcs``), and
the spot mixture is made of the cells' observed expression (``map_rate='observed'``), not of the
decoded lambda(z). With decoded rates and z alone every cell's map equals its type's mean: the
VAE's lambda(z) is nearly constant within a type, so a within-type choice of cells cannot change
any spot's mixture and the spot likelihood has no gradient for it. Optionally
(``n_type_pcs``) the head also reads components computed inside each cell type, where a type's
own sub-structure (a sub-population's few marker genes) is the leading axis rather than lost
behind the differences between types.
Losses return named parts so the training loop can log them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cellfate.nn.layers import mlp
from cellfate.nn.likelihoods import kl_standard_normal, nb_log_prob, poisson_log_prob
from cellfate.spatial.count_table import CountTable, nb_nll_fixed


@dataclass(frozen=True)
class ModuleConfig:
    """Network sizes; plain and serialisable so a saved model rebuilds exactly."""

    n_genes: int
    n_spots: int
    n_latent: int = 10
    n_hidden: int = 50
    spatial_likelihood: str = "nb"  # "nb" or "poisson"
    n_expression_pcs: int = 20  # expression components the map head reads besides z (0: z only)
    map_rate: str = "observed"  # what spots mix: "observed" expression or the "decoded" lambda(z)
    n_type_pcs: int = 0  # components computed inside each cell type, one block of inputs per type
    type_names: tuple[str, ...] = ()  # the types of those blocks (their order is the code order)

    def to_dict(self) -> dict:
        return asdict(self)


class DeepColorModule(nn.Module):
    """Encoder, decoder, map head and the spot-likelihood parameters."""

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__()
        if config.spatial_likelihood not in ("nb", "poisson"):
            raise ValueError(f"spatial_likelihood must be 'nb' or 'poisson', not {config.spatial_likelihood!r}")
        self.config = config
        g, h, k = config.n_genes, config.n_hidden, config.n_latent
        self.encoder = mlp(g, h, 2, 2 * k)
        self.decoder = mlp(k, h, 2, g)
        # theta starts at 10 (mild overdispersion): starting at 1 lets the dispersion absorb the
        # differences between cell types before the decoder learns to use z (posterior collapse)
        self.sc_log_theta = nn.Parameter(torch.full((g,), 2.3))
        # Per-gene rate scale, set from the data before training (init_rate_scale). Gene rates span
        # orders of magnitude and softplus is linear for large inputs, so without it the decoder
        # needs thousands of steps just to reach each gene's mean, and meanwhile the dispersion
        # absorbs every difference between cells and the posterior collapses onto the prior.
        self.register_buffer("rate_scale", torch.ones(g))
        if config.map_rate not in ("observed", "decoded"):
            raise ValueError(f"map_rate must be 'observed' or 'decoded', not {config.map_rate!r}")
        n_pc = config.n_expression_pcs
        self.register_buffer("pc_mean", torch.zeros(g))
        self.register_buffer("pc_loadings", torch.zeros(g, n_pc))
        n_t, k_t = len(config.type_names), config.n_type_pcs
        if k_t and not n_t:
            raise ValueError("n_type_pcs > 0 needs the cell types (type_names)")
        self.register_buffer("type_pc_mean", torch.zeros(n_t if k_t else 0, g))
        self.register_buffer("type_pc_loadings", torch.zeros(n_t if k_t else 0, g, k_t))
        self.map_head = mlp(k + n_pc + (n_t * k_t if k_t else 0), h, 2, config.n_spots)
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

    @staticmethod
    def log_normalise(x: torch.Tensor) -> torch.Tensor:
        """log1p of counts per 10k (what the encoder and the expression components read)."""
        return torch.log1p(x * (1e4 / x.sum(-1, keepdim=True).clamp_min(1.0)))

    @torch.no_grad()
    def init_expression_pcs(self, x: torch.Tensor) -> None:
        """Leading principal axes of the cells' log expression, scaled so the first has unit sd."""
        k = self.config.n_expression_pcs
        if k == 0:
            return
        mean, load = self._principal_axes(self.log_normalise(x), k)
        self.pc_mean.copy_(mean)
        self.pc_loadings.copy_(load)

    @staticmethod
    def _principal_axes(y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and the k leading axes of y (genes x k; zero columns past the rank), scaled so
        the first axis' scores have unit sd."""
        mean = y.mean(0)
        y = y - mean
        load = torch.zeros(y.shape[1], k, dtype=y.dtype, device=y.device)
        q = min(k, *y.shape)
        if q > 0:
            load[:, :q] = torch.linalg.svd(y, full_matrices=False)[2][:q].T
        return mean, load / (y @ load[:, 0]).std().clamp_min(1e-8) if q > 0 and len(y) > 1 else load

    @torch.no_grad()
    def init_type_pcs(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        """Leading axes of each type's log expression around its own mean.

        The global components are spent on what separates the types; a type's own sub-structure
        (a sub-population with a few marker genes) is then far down or absent, and the map head
        cannot place those cells apart from the rest of their type. Inside a type it is the top axis.
        """
        if self.config.n_type_pcs == 0:
            return
        y = self.log_normalise(x)
        for t in range(len(self.config.type_names)):
            sel = codes == t
            if int(sel.sum()) >= 2:
                mean, load = self._principal_axes(y[sel], self.config.n_type_pcs)
                self.type_pc_mean[t], self.type_pc_loadings[t] = mean, load

    def type_features(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Cells x (types x n_type_pcs): each cell's within-type components in its own type's
        block, zeros elsewhere (and everywhere for a type not seen in training, code -1)."""
        k = self.config.n_type_pcs
        out = torch.zeros(len(x), len(self.config.type_names) * k, dtype=x.dtype, device=x.device)
        y = self.log_normalise(x)
        for t in torch.unique(codes).tolist():
            if t >= 0:
                sel = codes == t
                out[sel, t * k:(t + 1) * k] = (y[sel] - self.type_pc_mean[t]) @ self.type_pc_loadings[t]
        return out

    def map_features(self, x: torch.Tensor, z: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """What the map head reads: z, then the cell's expression components, then its
        within-type components (``codes``: each cell's type index in ``type_names``)."""
        parts = [z]
        if self.config.n_expression_pcs:
            parts.append((self.log_normalise(x) - self.pc_mean) @ self.pc_loadings)
        if self.config.n_type_pcs:
            if codes is None:
                raise ValueError("this map head reads within-type components: the cells' types are needed")
            parts.append(self.type_features(x, codes))
        return torch.cat(parts, dim=-1)

    def map_rate(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The expression a cell adds to a spot, relative to its mean count (as lambda is)."""
        if self.config.map_rate == "observed":
            return x / x.mean(-1, keepdim=True).clamp_min(1e-8)
        return self.decode(z)

    def map_scores(self, features: torch.Tensor) -> torch.Tensor:
        """f(features): one positive score per spot (cells x spots)."""
        return F.softplus(self.map_head(features)) + 1e-8

    # --- losses ----------------------------------------------------------------------------
    def sc_loss(self, x: torch.Tensor, sample: bool = True, kl_weight: float = 1.0,
                table: CountTable | None = None) -> dict[str, torch.Tensor]:
        """Negative ELBO per cell (mean over the batch, without log(x!)), with its reconstruction and KL parts.

        ``sample=False`` decodes the posterior mean: a deterministic value for early stopping.
        ``kl_weight`` < 1 during warm-up keeps the posterior from collapsing onto the prior before
        the decoder has learnt to use z (the per-gene dispersion would otherwise absorb the
        cell-type differences and every cell would decode to the same profile).
        ``table``: the batch's :class:`CountTable`, for the same value at less cost.
        """
        mean, std = self.encode(x)
        z = mean + std * torch.randn_like(std) if sample else mean
        size = x.mean(-1, keepdim=True)
        mu = size * self.decode(z)
        theta = self.sc_log_theta.exp()
        nll = -nb_log_prob(x, mu, theta, constant=False).sum(-1).mean() if table is None else nb_nll_fixed(x, mu, theta, table)
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

    def spot_nll(self, spots: torch.Tensor, mu: torch.Tensor, table: CountTable | None = None) -> torch.Tensor:
        """Negative log-likelihood of the spot counts (without log(x!)), summed over genes, mean over spots.

        ``table`` (:class:`CountTable` of ``spots``): the same NB value with its gamma terms run
        over each gene's distinct counts instead of every spot (phase 2's costliest op).
        """
        if self.config.spatial_likelihood == "poisson":
            ll = poisson_log_prob(spots, mu, constant=False)
        elif table is not None:
            return nb_nll_fixed(spots, mu, self.sp_log_theta.exp(), table)
        else:
            ll = nb_log_prob(spots, mu, self.sp_log_theta.exp(), constant=False)
        return -ll.sum(-1).mean()

    def spatial_loss(self, features: torch.Tensor, rate: torch.Tensor, spots: torch.Tensor,
                     spot_size: torch.Tensor, table: CountTable | None = None) -> dict[str, torch.Tensor]:
        """Spot likelihood of the mixture of a batch of cells (map inputs ``features``, rates ``rate``)."""
        mu = self.spot_mean(self.spot_mixture(self.map_scores(features), rate), spot_size)
        nll = self.spot_nll(spots, mu, table)
        return {"loss": nll, "nll": nll}
