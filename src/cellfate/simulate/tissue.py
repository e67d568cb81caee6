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
