"""Forward analysis: what the fitted environment-dependent dynamics say the tissue will become.

From each progenitor's latent state z0 and condition c (its environment), the fitted dynamics are
integrated as a stochastic differential equation, dz = s mu(z, c) dt + s sigma(z, c) dW
(Euler-Maruyama), where mu and sigma are the drift and diffusion of VICDYF's dynamics posterior
q(d~ | z, c) and s its displacement scale (d = s d~ is the latent displacement per unit of the
kinetics' time, the time in which ds/dt = J_dec d). Many paths per cell run as one batch.

Terminal states are found from the data: the modelled cells' latent means are cut into small
k-means clusters (about ``cells_per_cluster`` cells each), and a cluster whose cells are at least
``min_share`` of one fate type (a cell type named as a fate: the lineage's ends) absorbs the
paths that reach it; a path still unabsorbed at the horizon is given the fate with the largest
share in its nearest cluster (the share absorbed is reported, so a horizon too short shows).
Clusters rather than every cell's neighbours: the nearest-cell vote (top-k of paths x cells
distances at every step) took two thirds of the integration time. A cell's fate probabilities are
the shares of its paths per fate; the tissue's fate proportions are their mean over the
progenitors.

The time step is set from the data so no choice of units matters: a step moves a path by
``step`` times the median nearest-neighbour distance between cells at the median drift. The
integration stops once 99% of the paths are absorbed, or at the horizon: ``horizon`` times the
time the median drift needs to cross the largest distance from the progenitors to the farthest
cells of a fate (the centroid of its ``end_quantile`` farthest). It must be long: the drift in
the trunk is a quarter of the median, and at a horizon of 2 crossings a third of the paths were
unabsorbed (seed 0), so the read-out was that of the trunk, not of the fate choice.
Optionally (``subspace`` < 1) each increment is projected onto the principal axes of the cells'
latent means: VICDYF's posterior leaves unused axes with a diffusion near 1 while the cells
spread there by hundredths.

Free paths leave the data: the drift network is only fitted where cells are, and beyond the ends
of the lineage (or where the drift at the branch points between the two fates, the mean of two
diverging futures) it carries paths tens to hundreds of cell spacings away, where the nearest
cluster decides their fate. The default read-out therefore restricts the same SDE to the cells:
:func:`state_graph` links each cell to its nearest neighbours, :func:`hop_probabilities` gives a
hop from cell i to neighbour j the Euler-Maruyama step's density (mixed with a uniform hop so no
walk stalls), and :func:`absorption` solves exactly for the probability of reaching each fate's
region first. No horizon, no unabsorbed paths, no path noise.

An intervention changes every progenitor's condition c and nothing else (:func:`intervene`), and
the shift in fate proportions is the difference of two read-outs from the same cells (on paths,
with common random numbers: the shift's noise is that of the difference, not of each side).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats

from cellfate.dynamics.module import VicdyfModule
from cellfate.errors import CellfateError

KINDS = ("remove", "scale", "block_ligand", "condition")
CHECK_EVERY = 2  # steps between absorption checks (a step moves half a cell spacing)
STOP_SHARE = 0.99  # the integration stops once this share of the paths is absorbed


@dataclass(frozen=True)
class ForwardConfig:
    """Integration and read-out settings (see the module docstring)."""

    n_paths: int = 50
    step: float = 0.5  # median drift step, in median nearest-neighbour distances
    horizon: float = 20.0  # upper bound, in crossings of the lineage at the median drift
    max_steps: int = 1000
    end_quantile: float = 0.5  # share of each fate's cells, farthest from the progenitors, that are its end
    seed: int = 0


@dataclass(frozen=True)
class Terminals:
    """The fates' regions of latent space: small clusters of the modelled cells, each with the
    share of every fate among its cells; a path is absorbed by a fate once the cluster nearest to
    it is at least ``min_share`` that fate."""

    fates: list[str]
    centres: torch.Tensor  # clusters x latent
    shares: torch.Tensor  # clusters x fates
    min_share: float
    origin: torch.Tensor  # the progenitors' centroid
    ends: torch.Tensor  # fates x latent, each fate's farthest cells' centroid (sets the horizon)
    basis: torch.Tensor  # latent x axes: orthonormal principal axes the data spans

    def vote(self, z: torch.Tensor) -> torch.Tensor:
        """Points x fates: the fate shares of each point's nearest cluster."""
        return self.shares[torch.cdist(z, self.centres).argmin(1)]


def terminal_states(z: np.ndarray, labels: np.ndarray, progenitors: list[str], fates: list[str],
                    cells_per_cluster: int = 15, min_share: float = 0.8, end_quantile: float = 0.5,
                    seed: int = 0, subspace: float = 1.0) -> Terminals:
    """The fates' regions from the data (see the module docstring)."""
    from sklearn.cluster import KMeans

    start = z[np.isin(labels, progenitors)]
    if len(start) == 0:
        raise CellfateError(f"no progenitor cells (types {progenitors}) to start from")
    origin = start.mean(0)
    ends = []
    for fate in fates:
        cells = z[labels == fate]
        if len(cells) < 3:
            raise CellfateError(f"fewer than 3 cells of fate {fate!r}: no terminal state can be found")
        dist = np.linalg.norm(cells - origin, axis=1)
        ends.append(cells[dist >= np.quantile(dist, 1.0 - end_quantile)].mean(0))
    k = int(np.clip(len(z) // max(1, cells_per_cluster), 2, len(z)))
    groups = KMeans(n_clusters=k, n_init=2, random_state=seed).fit(z)
    shares = np.array([[np.mean(labels[groups.labels_ == g] == f) for f in fates] for g in range(k)])
    as_t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    return Terminals(list(fates), as_t(groups.cluster_centers_), as_t(shares), float(min_share), as_t(origin),
                     as_t(np.array(ends)), as_t(data_subspace(z, subspace)))


def data_subspace(z: np.ndarray, variance: float) -> np.ndarray:
    """Latent x k orthonormal axes: the leading principal axes of the cells' latent means that
    hold ``variance`` of their variance (1: every axis). Axes the posterior left unused (cells
    spread there by hundredths while the diffusion is about 1) would otherwise fill with noise that
    takes paths where the drift was never fitted."""
    centred = z - z.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    if variance >= 1.0:
        return np.eye(z.shape[1])
    cum = np.cumsum(sv**2) / max(float((sv**2).sum()), 1e-30)
    k = int(np.searchsorted(cum, variance) + 1)
    return vt[:k].T


@torch.no_grad()
def time_grid(module: VicdyfModule, z: np.ndarray, c: np.ndarray, z0: np.ndarray, terminals: Terminals,
              cfg: ForwardConfig) -> tuple[float, int]:
    """(dt, number of steps) from the data's scales (see the module docstring)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(2, len(z))
    dist, _ = NearestNeighbors(n_neighbors=k).fit(z).kneighbors(z)
    spacing = float(np.median(dist[:, -1])) or 1e-3
    mu = module.drift(torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(c, dtype=torch.float32))
    speed = float(module.config.d_scale * mu.norm(dim=1).median())
    if speed <= 0:
        raise CellfateError("the fitted drift is zero: nothing to integrate")
    dt = cfg.step * spacing / speed
    span = float((terminals.ends - terminals.origin).norm(dim=1).max())
    n_steps = int(min(cfg.max_steps, max(1, math.ceil(cfg.horizon * span / (cfg.step * spacing)))))
    return dt, n_steps


@torch.no_grad()
def integrate(module: VicdyfModule, z0: torch.Tensor, c: torch.Tensor, terminals: Terminals, dt: float,
              n_steps: int, n_paths: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Euler-Maruyama paths from every cell: (cells x paths fate index, cells x paths absorbed).

    The noise comes from a generator seeded with ``seed`` and is drawn for every path at every
    step, absorbed or not, so two calls with the same seed and shapes share their random numbers.
    """
    gen = torch.Generator().manual_seed(int(seed))
    basis = terminals.basis  # latent x kept axes: the increments stay in the data's subspace
    z = z0.repeat_interleave(n_paths, dim=0).clone()
    cond = c.repeat_interleave(n_paths, dim=0)
    fate = torch.full((len(z),), -1, dtype=torch.long)
    scale, root = module.config.d_scale, math.sqrt(dt)
    for step in range(n_steps):
        free = fate < 0
        noise = torch.randn(z.shape, generator=gen)  # for every path: calls with one seed share them
        mu, sigma = module.dynamics_posterior(z[free], cond[free])
        z[free] += ((scale * (mu * dt + sigma * root * noise[free])) @ basis) @ basis.T
        if step % CHECK_EVERY == CHECK_EVERY - 1 or step == n_steps - 1:  # the vote is the costly part
            share, best = terminals.vote(z[free]).max(1)
            fate[free] = torch.where(share >= terminals.min_share, best, -1)
            if float((fate >= 0).float().mean()) >= STOP_SHARE:
                break
    absorbed = fate >= 0
    if not bool(absorbed.all()):  # the fate of the nearest cluster that is mostly one fate
        dist = torch.cdist(z[~absorbed], terminals.centres)
        owned = terminals.shares.max(1).values >= terminals.min_share
        dist[:, ~owned] = torch.inf
        fate[~absorbed] = terminals.shares[dist.argmin(1)].argmax(1)
    shape = (len(z0), n_paths)
    return fate.reshape(shape).numpy(), absorbed.reshape(shape).numpy()


@dataclass(frozen=True)
class StateGraph:
    """The modelled cells' symmetric k-nearest-neighbour graph as edge lists (every edge both
    ways: a directed kNN graph can hold a closed set of cells from which no walk leaves, and one
    of a fitted tissue did) and the time one hop takes."""

    rows: np.ndarray
    cols: np.ndarray
    dt: float


@torch.no_grad()
def state_graph(module: VicdyfModule, z: np.ndarray, c: np.ndarray, n_neighbours: int = 15,
                step: float = 4.0) -> StateGraph:
    """The graph of the cells' latent means; one hop lasts the time the median drift (at the
    cells' own conditions ``c``) needs to cross ``step`` median neighbour distances."""
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    k = int(min(max(1, n_neighbours), len(z) - 1))
    dist, nbr = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    adj = sp.csr_matrix((np.ones(len(z) * k), (np.repeat(np.arange(len(z)), k), nbr[:, 1:].ravel())),
                        shape=(len(z), len(z)))
    adj = (adj + adj.T).tocoo()
    mu = module.drift(torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(c, dtype=torch.float32))
    speed = float(module.config.d_scale * mu.norm(dim=1).median())
    if speed <= 0:
        raise CellfateError("the fitted drift is zero: nothing to integrate")
    return StateGraph(adj.row, adj.col, step * float(np.median(dist[:, 1:])) / speed)


@torch.no_grad()
def hop_probabilities(module: VicdyfModule, z: np.ndarray, graph: StateGraph, c: np.ndarray,
                      mix: float = 0.2) -> np.ndarray:
    """Per edge (i, j): the probability that one hop from cell i lands on cell j under condition
    ``c`` (one row, every cell).

    It is the Euler-Maruyama step's own density, N(z_j - z_i; s mu_i dt, s^2 sigma_i^2 dt), over
    i's neighbours: the same SDE as :func:`integrate`, but a path can only be where cells are, so
    it cannot follow the drift out of the data (where the network was never fitted and free paths
    ran hundreds of cell spacings away). A share ``mix`` of every hop goes to a uniformly drawn
    neighbour (the data's own diffusion): where the drift points between the branches no cell
    lies ahead, and without it a walk would stay there for ever.
    """
    n, scale = len(z), module.config.d_scale
    cond = torch.as_tensor(np.broadcast_to(c, (n, len(c))).copy(), dtype=torch.float32)
    mu, sigma = module.dynamics_posterior(torch.as_tensor(z, dtype=torch.float32), cond)
    mean = (scale * mu * graph.dt).double().numpy()
    var = np.maximum(((scale * sigma) ** 2 * graph.dt).double().numpy(), 1e-12)  # a noiseless axis: the closest hop
    rows, cols = graph.rows, graph.cols
    logit = -(((z[cols] - z[rows] - mean[rows]) ** 2) / (2.0 * var[rows])).sum(1)
    top = np.full(n, -np.inf)
    np.maximum.at(top, rows, logit)
    w = np.exp(logit - top[rows])
    deg = np.bincount(rows, minlength=n)
    return (1.0 - mix) * w / np.bincount(rows, w, minlength=n)[rows] + mix / deg[rows]


def absorption(graph: StateGraph, p: np.ndarray, fate: np.ndarray, n_fates: int) -> np.ndarray:
    """Cells x fates: the probability that the walk with hop probabilities ``p`` from each cell
    reaches a cell of each fate (``fate``: its index, -1 for a cell that absorbs nothing) before
    any other fate: the harmonic solve (I - Q) B = R over the transient cells, exact, so no path
    count or horizon enters."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    n = len(fate)
    trans = np.flatnonzero(fate < 0)
    index = np.full(n, -1)
    index[trans] = np.arange(len(trans))
    out = np.zeros((n, n_fates))
    out[fate >= 0, fate[fate >= 0]] = 1.0
    if len(trans) == 0:
        return out
    keep = fate[graph.rows] < 0
    rows, cols, w = graph.rows[keep], graph.cols[keep], p[keep]
    hit = fate[cols] >= 0
    q = sp.csc_matrix((w[~hit], (index[rows[~hit]], index[cols[~hit]])), shape=(len(trans), len(trans)))
    r = np.zeros((len(trans), n_fates))
    np.add.at(r, (index[rows[hit]], fate[cols[hit]]), w[hit])
    with np.errstate(all="ignore"), warnings.catch_warnings():  # a singular system is reported below
        warnings.simplefilter("ignore")
        solved = np.asarray(spsolve((sp.identity(len(trans), format="csc") - q).tocsc(), r)).reshape(len(trans), -1)
    if not np.isfinite(solved).all():
        raise CellfateError("some cells reach no fate region on the cells' kNN graph (a part of the graph without "
                            "fate cells): raise spatial.forward.graph_neighbours or graph_mix")
    out[trans] = solved
    return out


def cell_fates(terminals: Terminals, z: np.ndarray) -> np.ndarray:
    """Per cell: the fate whose region holds it (its nearest cluster is at least ``min_share``
    that fate), or -1."""
    share, best = terminals.vote(torch.as_tensor(z, dtype=torch.float32)).max(1)
    return torch.where(share >= terminals.min_share, best, -1).numpy()


def graph_fates(module: VicdyfModule, z: np.ndarray, terminals: Terminals, graph: StateGraph, starts: np.ndarray,
                c: np.ndarray, mix: float = 0.2) -> np.ndarray:
    """Starts x fates: each start cell's fate probabilities under its own condition (``c``, one
    row per start), from :func:`absorption`. Equal conditions share one solve."""
    fate = cell_fates(terminals, z)
    n_fates = len(terminals.fates)
    unique, inverse = np.unique(np.asarray(c, dtype=float), axis=0, return_inverse=True)
    out = np.zeros((len(starts), n_fates))
    for u, row in enumerate(unique):
        who = np.flatnonzero(inverse.ravel() == u)
        solved = absorption(graph, hop_probabilities(module, z, graph, row, mix), fate, n_fates)
        out[who] = solved[np.asarray(starts)[who]]
    return out


def fates_per_condition(module: VicdyfModule, z: np.ndarray, terminals: Terminals, graph: StateGraph,
                        starts: np.ndarray, conditions: np.ndarray, mix: float = 0.2) -> np.ndarray:
    """Starts x conditions x fates: every start cell's fate probabilities under every condition
    (rows of ``conditions``). One absorption solve per condition gives every cell's probabilities
    at once, so running all starts under all conditions costs what a condition per start costs:
    the uncertainty decomposition can average over the tissue's environments exactly instead of
    over a few random draws per cell (whose noise in H(mean p) blurred the ranking of cells)."""
    fate = cell_fates(terminals, z)
    n_fates = len(terminals.fates)
    out = np.zeros((len(starts), len(conditions), n_fates))
    for k, row in enumerate(np.asarray(conditions, dtype=float)):
        out[:, k] = absorption(graph, hop_probabilities(module, z, graph, row, mix), fate, n_fates)[np.asarray(starts)]
    return out


def shared_conditions(n: int, n_conditions: int, seed: int = 0) -> np.ndarray:
    """Indices of the progenitors whose conditions every progenitor is run under (graph
    read-out): all ``n`` when ``n_conditions`` is 0 or at least ``n``, else a seeded random
    subset of that size (it bounds the number of solves on a large tissue)."""
    if n_conditions <= 0 or n_conditions >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(n_conditions), replace=False))


def fate_probabilities(outcomes: np.ndarray, n_fates: int) -> np.ndarray:
    """Cells x fates: the share of each cell's paths ending in each fate."""
    return np.stack([(outcomes == k).mean(1) for k in range(n_fates)], axis=1)


@dataclass(frozen=True)
class Condition:
    """The analysed cells' raw condition, how it is scaled and what its columns are."""

    raw: np.ndarray  # cells x columns, before standardisation
    names: list[str]
    types: list[str]  # the partner type (or experimental condition) of each column
    scale: str  # 'ln' (log density), 'log2' (colocalization), 'share' (neighbourhood) or 'onehot'

    @property
    def mean(self) -> np.ndarray:
        return self.raw.mean(0)

    @property
    def sd(self) -> np.ndarray:
        return np.maximum(self.raw.std(0), 1e-12)

    def standardised(self, raw: np.ndarray | None = None) -> np.ndarray:
        """``raw`` (default the cells' own) on the scale the model was fitted on."""
        return ((self.raw if raw is None else raw) - self.mean) / self.sd


def _columns(cond: Condition, partner: str) -> np.ndarray:
    cols = np.flatnonzero(np.asarray(cond.types) == partner)
    if len(cols) == 0:
        raise CellfateError(f"intervention on {partner!r}: no condition column of that partner "
                            f"({sorted(set(cond.types))})")
    return cols


def _removed(cond: Condition, raw: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The partner gone: its columns at the least exposure seen in any analysed cell (a share: 0)."""
    out = raw.copy()
    out[:, cols] = 0.0 if cond.scale == "share" else cond.raw[:, cols].min(0)
    return out


def intervene(cond: Condition, raw: np.ndarray, spec: dict, senders: dict[str, list[str]] | None = None) -> np.ndarray:
    """The condition of cells (``raw``, cells x columns) under one intervention entry.

    ``remove`` a partner: its columns fall to the lowest exposure any analysed cell has (where the
    partner is absent in the data; extrapolating below it would read the drift where it was never
    fitted). ``scale`` by ``factor``: a log density or log2 colocalization moves by log(factor), a
    neighbourhood share is multiplied (at most 1). ``block_ligand``: every partner that sends the
    ligand (``senders``, from expression) is removed as a source of signal. ``condition``: the
    one-hot experimental condition is switched to ``value``.
    """
    kind = spec.get("kind")
    if kind == "condition":
        if cond.scale != "onehot" or spec.get("value") not in cond.names:
            raise CellfateError(f"intervention {spec.get('name')!r}: condition {spec.get('value')!r} is not one of "
                                f"the one-hot conditions {cond.names}")
        out = np.zeros_like(raw)
        out[:, cond.names.index(spec["value"])] = 1.0
        return out
    if kind == "block_ligand":
        partners = (senders or {}).get(str(spec.get("ligand")), [])
        if not partners:
            raise CellfateError(f"intervention {spec.get('name')!r}: no partner sends ligand {spec.get('ligand')!r}")
        return _removed(cond, raw, np.concatenate([_columns(cond, p) for p in partners]))
    cols = _columns(cond, str(spec.get("partner")))
    if kind == "remove":
        return _removed(cond, raw, cols)
    if kind != "scale":
        raise CellfateError(f"intervention {spec.get('name')!r}: unknown kind {kind!r} (one of {KINDS})")
    factor = float(spec.get("factor", 2.0))
    out = raw.copy()
    if cond.scale == "share":
        out[:, cols] = np.minimum(out[:, cols] * factor, 1.0)
    else:
        out[:, cols] += np.log(factor) if cond.scale == "ln" else np.log2(factor)
    return out


def shift_interval(base: np.ndarray, treated: np.ndarray, level: float = 0.95, weights: np.ndarray | None = None
                   ) -> tuple[float, float, float]:
    """(shift, low, high) of the tissue's share of one fate, treated minus untreated.

    ``base`` and ``treated`` are fits x cells: each progenitor's probability of the fate in each
    fit. With ``weights`` (fits x cells: how often each progenitor is in the bootstrap sample that
    fit was trained on) every fit is a bootstrap replicate of the whole analysis, fit and tissue
    share alike, so the standard error is the replicates' standard deviation (not divided by their
    number: replicates of one tissue are not independent tissues) and the interval is Student's t
    with fits - 1 degrees of freedom (few replicates). Without, the fits differ only by training
    and see the same progenitors: the error is the fits' and the progenitors' squared standard
    errors added, Student's t with Welch-Satterthwaite degrees of freedom. The shift is the fits'
    mean over every progenitor. Paths are not resampled: treated and untreated runs share their
    random numbers (or the graph read-out has none).
    """
    per_cell = np.asarray(treated, dtype=float) - np.asarray(base, dtype=float)  # fits x cells
    n_fits, n_cells = per_cell.shape
    shift = float(per_cell.mean())
    if weights is not None:
        replicate = (per_cell * weights).sum(1) / np.asarray(weights, dtype=float).sum(1)
        parts = [(replicate.var(ddof=1) if n_fits > 1 else 0.0, n_fits - 1)]
    else:
        parts = [(per_cell.mean(axis=1).var(ddof=1) / n_fits if n_fits > 1 else 0.0, n_fits - 1),
                 (per_cell.mean(axis=0).var(ddof=1) / n_cells if n_cells > 1 else 0.0, n_cells - 1)]
    variance = sum(v for v, _ in parts)
    if variance == 0.0:
        return shift, shift, shift
    dof = variance**2 / sum(v**2 / d for v, d in parts if d > 0)
    half = float(stats.t.ppf((1.0 + level) / 2.0, dof) * np.sqrt(variance))
    return shift, shift - half, shift + half


def ligand_senders(expression: pd.DataFrame, labels: np.ndarray, partners: list[str], min_share: float = 0.5
                   ) -> dict[str, list[str]]:
    """Per ligand (gene symbol): the partner types whose mean expression is at least ``min_share``
    of the highest type mean: the cells a blocking antibody would silence."""
    means = pd.DataFrame({t: expression[labels == t].mean(0) for t in pd.unique(labels)})
    top = means.max(1).replace(0.0, np.nan)
    out: dict[str, list[str]] = {}
    for gene in means.index:
        senders = [p for p in partners if p in means and means.at[gene, p] >= min_share * top.get(gene, np.nan)]
        if senders:
            out[str(gene)] = senders
    return out


def _entropy(p: np.ndarray) -> np.ndarray:
    """Fate entropy in bits along the last axis."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=-1)


def condition_draws(n: int, n_conditions: int, seed: int = 0) -> np.ndarray:
    """Cells x conditions: indices of the progenitors whose conditions each cell is run under,
    its own first and then ``n_conditions`` - 1 drawn at random."""
    rng = np.random.default_rng(seed)
    return np.c_[np.arange(n), rng.integers(n, size=(n, n_conditions - 1))]


def uncertainty_parts(p: np.ndarray) -> pd.DataFrame:
    """Per progenitor, from p (cells x conditions x fates, the fate probabilities under each
    drawn environment): the total uncertainty is the entropy of their mean, H(mean_k p_k); the
    intrinsic part the mean entropy at a fixed environment, mean_k H(p_k) (what the diffusion
    alone leaves open); the environmental part their difference, the mutual information between
    environment and fate (in bits), and ``environmental_share`` its share of the total."""
    total = _entropy(p.mean(1))
    intrinsic = _entropy(p).mean(1)
    environmental = np.maximum(total - intrinsic, 0.0)
    return pd.DataFrame({"total_entropy": total, "intrinsic_entropy": intrinsic, "environmental_mi": environmental,
                         "environmental_share": environmental / np.maximum(total, 1e-12),
                         "fate_sd_over_environments": p[:, :, 0].std(1)})


@torch.no_grad()
def decompose(module: VicdyfModule, z0: np.ndarray, c_std: np.ndarray, terminals: Terminals, dt: float, n_steps: int,
              n_paths: int, n_conditions: int = 8, seed: int = 0) -> pd.DataFrame:
    """Per progenitor: its fate uncertainty split into the environment's part and its own
    (:func:`uncertainty_parts`), from paths run at the cell's own state z under ``n_conditions``
    environments drawn from the progenitors' own conditions (:func:`condition_draws`)."""
    n = len(z0)
    draws = condition_draws(n, n_conditions, seed)
    z = torch.as_tensor(np.repeat(z0, n_conditions, axis=0), dtype=torch.float32)
    c = torch.as_tensor(c_std[draws.ravel()], dtype=torch.float32)
    outcomes, _ = integrate(module, z, c, terminals, dt, n_steps, n_paths, seed)
    return uncertainty_parts(fate_probabilities(outcomes, len(terminals.fates)).reshape(n, n_conditions, -1))
