"""A tissue section: spots on a grid, cell types placed in spatial domains, and a separate
single-cell reference, with the true abundances and colocalized type pairs recorded.

Domains are Voronoi regions around seeded centres; each domain holds a few cell types with fixed
weights. Two types are *truly colocalized* when they share a domain; the true type-pair score is
the log2 ratio of the overlap of their spatial distributions to that of two uniform ones, the
same quantity DeepCOLOR estimates per cell pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.simulate.corpus import corpus_model, sample_rng

DEFAULT_DOMAINS: dict[str, dict[str, float]] = {
    "epithelium": {"epithelial cell": 0.7, "macrophage": 0.3},
    "stroma": {"fibroblast": 0.6, "endothelial cell": 0.4},
    "lymphoid": {"T cell": 0.55, "B cell": 0.45},
}


@dataclass(frozen=True)
class TissueSpec:
    """Grid size, domains and the size of the independent single-cell reference."""

    grid: tuple[int, int] = (20, 20)
    domains: dict[str, dict[str, float]] = field(default_factory=lambda: dict(DEFAULT_DOMAINS))
    cells_per_spot: float = 8.0
    capture_efficiency: float = 0.3
    n_reference_cells: int = 1200
    n_genes: int = 500
    seed: int = 0


def true_pair_colocalization(abundance: np.ndarray) -> np.ndarray:
    """log2 overlap ratio of the types' spatial distributions (types x types)."""
    dist = abundance / np.maximum(abundance.sum(axis=0, keepdims=True), 1e-12)
    overlap = dist.T @ dist
    return np.log2(np.maximum(overlap, 1e-12)) + np.log2(abundance.shape[0])


def simulate_tissue(spec: TissueSpec) -> tuple[ad.AnnData, ad.AnnData]:
    """Return ``(spots, reference)``.

    spots: integer counts, ``obsm['spatial']`` grid coordinates, ``obs['domain']``,
    ``obsm['true_abundance']`` (cells of each type per spot; type names in
    ``uns['cell_types']``), ``uns['true_pair_colocalization']`` and ``uns['colocalized_pairs']``.
    reference: single cells from the same expression model with ``obs['cell_type']``.
    """
    cell_types = sorted({t for weights in spec.domains.values() for t in weights})
    model = corpus_model(cell_types, spec.n_genes, spec.seed)
    rng = sample_rng(spec.seed, "tissue")
    nx, ny = spec.grid
    xy = np.array([(x, y) for y in range(ny) for x in range(nx)], dtype=float)
    names = list(spec.domains)
    centres = rng.uniform([0, 0], [nx, ny], size=(len(names) * 2, 2))  # two patches per domain
    nearest = np.argmin(((xy[:, None, :] - centres[None]) ** 2).sum(-1), axis=1) % len(names)
    domain = np.asarray(names)[nearest]

    weights = np.array([[spec.domains[d].get(t, 0.0) for t in cell_types] for d in names])
    weights = 0.95 * weights / weights.sum(1, keepdims=True) + 0.05 / len(cell_types)  # a little everywhere
    n_cells = rng.poisson(spec.cells_per_spot, size=len(xy))
    abundance = np.stack([rng.multinomial(n, weights[k]) for n, k in zip(n_cells, nearest)])

    cell_type_idx = np.repeat(np.tile(np.arange(len(cell_types)), len(xy)), abundance.ravel())
    spot_of_cell = np.repeat(np.arange(len(xy)), abundance.sum(1))
    library = rng.lognormal(np.log(2500.0), 0.4, size=len(cell_type_idx))
    cell_counts = model.sample(cell_type_idx, library, rng)
    spot_counts = np.zeros((len(xy), len(model.genes)), dtype=np.int64)
    np.add.at(spot_counts, spot_of_cell, cell_counts)
    spot_counts = rng.binomial(spot_counts, spec.capture_efficiency).astype(np.int32)

    truth = true_pair_colocalization(abundance.astype(float))
    pairs = [(a, b) for d in spec.domains.values() for a in d for b in d if a < b]
    spots = ad.AnnData(
        X=sp.csr_matrix(spot_counts),
        obs=pd.DataFrame({"domain": pd.Categorical(domain, categories=names), "n_cells_true": abundance.sum(1)},
                         index=pd.Index([f"spot_{i:04d}" for i in range(len(xy))], name="spot_id")),
        var=model.genes.copy(),
    )
    spots.obsm["spatial"] = xy
    spots.obsm["true_abundance"] = abundance.astype(np.float32)
    spots.uns["cell_types"] = np.asarray(cell_types)
    spots.uns["true_pair_colocalization"] = truth
    spots.uns["colocalized_pairs"] = np.asarray(sorted(set(pairs)))

    share = abundance.sum(0) / abundance.sum()
    ref_types = rng.choice(len(cell_types), size=spec.n_reference_cells, p=share)
    ref_library = rng.lognormal(np.log(3000.0), 0.45, size=spec.n_reference_cells)
    reference = ad.AnnData(
        X=sp.csr_matrix(model.sample(ref_types, ref_library, rng)),
        obs=pd.DataFrame({"cell_type": pd.Categorical(np.asarray(cell_types)[ref_types], categories=cell_types)},
                         index=pd.Index([f"ref_{i:05d}" for i in range(spec.n_reference_cells)], name="cell_id")),
        var=model.genes.copy(),
    )
    return spots, reference


# --- a tissue whose cells carry where they live in their expression ------------------------------

@dataclass(frozen=True)
class CellTissueSpec:
    """A tissue where cells of one type differ by where they live.

    ``gradient_type`` runs a program along x (half its genes rise with x, half fall);
    ``substate_type`` is in one sub-state on the left half and another on the right;
    ``niche_type`` switches on niche genes in spots where ``niche_partner`` is dense.
    The reference is a random sample of the tissue's own cells, dissociated (counts drawn anew),
    so each reference cell has a true home.
    """

    grid: tuple[int, int] = (16, 16)
    cell_types: tuple[str, ...] = ("fibroblast", "epithelial cell", "macrophage", "T cell", "endothelial cell")
    gradient_type: str = "fibroblast"
    substate_type: str = "epithelial cell"
    niche_type: str = "macrophage"
    niche_partner: str = "T cell"
    program_genes: int = 12  # genes per program (gradient, each sub-state, niche)
    gradient_fold: float = 3.0  # log fold change of a gradient gene from one edge to the other
    substate_fold: float = 1.5
    niche_fold: float = 1.5
    cells_per_spot: float = 8.0
    capture_efficiency: float = 0.3
    n_reference_cells: int = 1200
    n_genes: int = 300
    seed: int = 0


def smooth_densities(xy: np.ndarray, n_types: int, rng: np.random.Generator, n_bumps: int = 3) -> np.ndarray:
    """Spots x types positive weights: each type a sum of seeded Gaussian bumps over a floor, so
    every type has its own map but is present everywhere (a gradient needs the whole axis)."""
    span = xy.max(0) - xy.min(0) + 1.0
    out = np.empty((len(xy), n_types))
    for k in range(n_types):
        centres = xy.min(0) + rng.uniform(0, 1, size=(n_bumps, 2)) * span
        width = rng.uniform(0.15, 0.3, size=n_bumps) * span.mean()
        d2 = ((xy[:, None, :] - centres[None]) ** 2).sum(-1)
        out[:, k] = 0.3 + (np.exp(-d2 / (2 * width ** 2)) * rng.uniform(0.5, 1.5, n_bumps)).sum(1)
    return out


def _programs(model_genes: pd.DataFrame, n_programs: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint random gene sets (no marker, housekeeping or mitochondrial gene)."""
    from cellfate.simulate.expression import CELL_TYPES, HOUSEKEEPING
    fixed = {m for spec in CELL_TYPES.values() for m in spec["markers"]} | set(HOUSEKEEPING)
    free = np.flatnonzero(~model_genes["symbol"].isin(fixed).to_numpy() & ~model_genes["is_mitochondrial"].to_numpy())
    picked = rng.choice(free, size=n_programs * size, replace=False)
    return [picked[i * size:(i + 1) * size] for i in range(n_programs)]


def cell_proportions(base: np.ndarray, types: np.ndarray, home: np.ndarray, spot_partner: np.ndarray,
                     spec: CellTissueSpec, programs: list[np.ndarray], names: list[str]) -> tuple[np.ndarray, dict]:
    """Per cell gene proportions: the type's, times its positional programs; and the true states."""
    grad, left, right, niche = programs
    props = base[types].copy()
    xn = home[:, 0] / max(spec.grid[0] - 1, 1)
    is_grad = types == names.index(spec.gradient_type)
    sign = np.where(np.arange(len(grad)) % 2 == 0, 1.0, -1.0)
    props[np.ix_(is_grad, grad)] *= np.exp(spec.gradient_fold * (xn[is_grad, None] - 0.5) * sign[None])
    is_sub = types == names.index(spec.substate_type)
    state = np.where(is_sub, (xn >= 0.5).astype(int), -1)
    props[np.ix_(is_sub & (state == 0), left)] *= np.exp(spec.substate_fold)
    props[np.ix_(is_sub & (state == 1), right)] *= np.exp(spec.substate_fold)
    is_niche_type = types == names.index(spec.niche_type)
    in_niche = is_niche_type & (spot_partner > np.median(spot_partner))
    props[np.ix_(in_niche, niche)] *= np.exp(spec.niche_fold)
    props /= props.sum(1, keepdims=True)
    return props, {"substate": state, "in_niche": np.where(is_niche_type, in_niche.astype(int), -1)}


def simulate_cell_tissue(spec: CellTissueSpec) -> tuple[ad.AnnData, ad.AnnData]:
    """Return ``(spots, reference)`` shaped like :func:`simulate_tissue`'s, plus per reference cell
    its true home (``obs['true_x']``, ``obs['true_y']``, ``obs['true_spot']``), ``obs['true_substate']``
    and ``obs['true_niche']`` (-1 for cells of other types), and the program genes in
    ``uns['programs']`` (of the reference)."""
    names = list(spec.cell_types)
    model = corpus_model(names, spec.n_genes, spec.seed)
    rng = sample_rng(spec.seed, "cell_tissue")
    nx, ny = spec.grid
    xy = np.array([(x, y) for y in range(ny) for x in range(nx)], dtype=float)
    dens = smooth_densities(xy, len(names), rng)
    weights = dens / dens.sum(1, keepdims=True)
    n_cells = rng.poisson(spec.cells_per_spot, size=len(xy))
    abundance = np.stack([rng.multinomial(n, w) for n, w in zip(n_cells, weights)])
    types = np.repeat(np.tile(np.arange(len(names)), len(xy)), abundance.ravel())
    spot = np.repeat(np.arange(len(xy)), abundance.sum(1))
    home = xy[spot] + rng.uniform(-0.5, 0.5, size=(len(spot), 2))
    partner = dens[:, names.index(spec.niche_partner)] / dens.sum(1)
    programs = _programs(model.genes, 4, spec.program_genes, rng)
    props, states = cell_proportions(model.proportions, types, home, partner[spot], spec, programs, names)
    library = rng.lognormal(np.log(2500.0), 0.4, size=len(types))
    counts = model.sample(types, library, rng, proportions=props)
    spot_counts = np.zeros((len(xy), len(model.genes)), dtype=np.int64)
    np.add.at(spot_counts, spot, counts)
    spot_counts = rng.binomial(spot_counts, spec.capture_efficiency).astype(np.int32)

    spots = ad.AnnData(X=sp.csr_matrix(spot_counts), var=model.genes.copy(),
                       obs=pd.DataFrame({"n_cells_true": abundance.sum(1)},
                                        index=pd.Index([f"spot_{i:04d}" for i in range(len(xy))], name="spot_id")))
    spots.obsm["spatial"] = xy
    spots.obsm["true_abundance"] = abundance.astype(np.float32)
    spots.uns["cell_types"] = np.asarray(names)
    spots.uns["true_pair_colocalization"] = true_pair_colocalization(abundance.astype(float))
    truth = spots.uns["true_pair_colocalization"]
    spots.uns["cell_level_truth"] = {"gradient_type": spec.gradient_type, "substate_type": spec.substate_type,
                                     "niche_type": spec.niche_type, "niche_partner": spec.niche_partner}
    spots.uns["colocalized_pairs"] = np.asarray([(a, b) for i, a in enumerate(names) for j, b in enumerate(names)
                                                 if i < j and truth[i, j] > 0.1] or [(names[0], names[1])])

    pick = rng.choice(len(types), size=min(spec.n_reference_cells, len(types)), replace=False)  # in random order
    ref_library = rng.lognormal(np.log(3000.0), 0.45, size=len(pick))
    obs = pd.DataFrame({"cell_type": pd.Categorical(np.asarray(names)[types[pick]], categories=names),
                        "true_x": home[pick, 0], "true_y": home[pick, 1], "true_spot": spot[pick],
                        "true_substate": states["substate"][pick], "true_niche": states["in_niche"][pick]},
                       index=pd.Index([f"ref_{i:05d}" for i in range(len(pick))], name="cell_id"))
    reference = ad.AnnData(X=sp.csr_matrix(model.sample(types[pick], ref_library, rng, proportions=props[pick])),
                           obs=obs, var=model.genes.copy())
    reference.uns["programs"] = {k: model.genes.index[p].to_numpy() for k, p in
                                 zip(("gradient", "substate_left", "substate_right", "niche"), programs)}
    return spots, reference
