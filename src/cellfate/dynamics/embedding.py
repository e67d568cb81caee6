"""Latent dynamics drawn on a 2-D embedding, through a kNN graph instead of a dense N x N matrix.

The original scores every pair of cells i, j by cos(d_i, z_j - z_i), turns the scores into
transition probabilities exp(cos / sigma) normalised per row and moves each cell's arrow toward
the embedding positions of the cells it would go to: memory and time grow with N^2 (cells x cells
x latent tensors: 4 GiB at 3,000 cells). A cell can only plausibly move to a nearby state, so
here the pairs are the k nearest neighbours in latent space (N x k). The arrow is
sum_j p_ij u_ij minus the same sum with uniform weights, u_ij the unit vector from e_i to e_j on
the embedding, so that a cell at the edge of a cloud, whose neighbours all lie on one side, gets
no arrow from the geometry alone.
"""

from __future__ import annotations

import logging

import numpy as np

from cellfate.neighbours import nearest_neighbours

log = logging.getLogger(__name__)


def knn_indices(x: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Indices (cells x k) of each cell's k nearest other cells (Euclidean; a scipy k-d tree, see
    :func:`cellfate.neighbours.nearest_neighbours`)."""
    if min(n_neighbors, len(x) - 1) < 1:
        raise ValueError("need at least two cells for a neighbour graph")
    return nearest_neighbours(np.asarray(x), n_neighbors)[1]


def transition_weights(z: np.ndarray, d: np.ndarray, neighbors: np.ndarray, sigma: float = 0.05) -> np.ndarray:
    """p_ij over each cell's neighbours: softmax_j(cos(d_i, z_j - z_i) / sigma), cells x k."""
    delta = z[neighbors] - z[:, None, :]  # cells x k x latent
    norm = np.linalg.norm(delta, axis=2) * np.linalg.norm(d, axis=1)[:, None]
    cos = np.einsum("ikl,il->ik", delta, d) / np.maximum(norm, 1e-12)
    logits = cos / sigma
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def project_velocity(z: np.ndarray, d: np.ndarray, embedding: np.ndarray, n_neighbors: int = 30,
                     sigma: float = 0.05, neighbors: np.ndarray | None = None) -> np.ndarray:
    """Arrows (cells x 2) on ``embedding`` for latent displacements ``d`` at latent states ``z``."""
    neighbors = knn_indices(z, n_neighbors) if neighbors is None else neighbors
    weights = transition_weights(z, d, neighbors, sigma)
    step = embedding[neighbors] - embedding[:, None, :]  # cells x k x 2
    step /= np.maximum(np.linalg.norm(step, axis=2, keepdims=True), 1e-12)
    arrows = np.einsum("ik,ikl->il", weights, step) - step.mean(axis=1)
    return arrows.astype(np.float32)


def umap_embedding(z: np.ndarray, n_neighbors: int = 30, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """2-D UMAP of the latent means (:func:`cellfate.umap_layout.umap_layout`: seeded, and no
    numba compilation, which in umap-learn took longer than fitting the model)."""
    from cellfate.umap_layout import umap_layout

    return umap_layout(z, n_neighbors=max(2, n_neighbors), min_dist=min_dist, seed=seed)


#: The basis under which scVelo and scanpy find VICDYF's embedding: obsm["X_<basis>"] holds the
#: positions and obsm["velocity_<basis>"] the arrows, as scvelo.tl.velocity_embedding writes them.
SCVERSE_BASIS = "vicdyf_umap"


def add_scverse_keys(obsm: dict, uns: dict, *, n_neighbors: int, min_dist: float, seed: int) -> None:
    """Repeat the expected-drift arrows and the layout settings under scverse's names.

    ``scvelo.pl.velocity_embedding(adata, basis="vicdyf_umap")`` (and its grid/stream forms) plot
    ``obsm["velocity_vicdyf_umap"]`` on ``obsm["X_vicdyf_umap"]`` without recomputing a velocity
    graph; ``scanpy.pl.embedding`` reads the same basis. The arrows are the expected displacement
    (``X_vicdyf_mdumap``), the one our own figure draws. The UMAP settings go where scanpy puts its
    own (``uns["<basis>"]["params"]``) so a reader can see how the layout was made.
    """
    obsm[f"velocity_{SCVERSE_BASIS}"] = obsm["X_vicdyf_mdumap"]
    uns[SCVERSE_BASIS] = {"params": {"n_neighbors": int(n_neighbors), "min_dist": float(min_dist),
                                     "random_state": int(seed), "metric": "euclidean", "use_rep": "X_vicdyf_zl"}}
    uns["velocity_params"] = {"mode": "vicdyf", "embeddings": [SCVERSE_BASIS], "arrows": "X_vicdyf_mdumap"}
