"""Nearest neighbours, the kNN graph and Leiden clusters: one implementation for every stage.

The kNN is a scipy k-d tree rather than scikit-learn's (the same neighbours; importing
scikit-learn, ~1.4 s with scipy.stats, cost more than VICDYF's whole UMAP), the graph an igraph
built from the neighbour lists and the clusters leidenalg's RB configuration model, scanpy's
default, without scanpy's import and its numba compilation.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def nearest_neighbours(X: np.ndarray, n_neighbors: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """``(dist, idx)``, cells x k: each row's k nearest other rows (euclidean), nearest first."""
    k = min(n_neighbors, len(X) - 1)
    dist, idx = cKDTree(X).query(X, k=k + 1)
    return dist[:, 1:], idx[:, 1:]  # drop self


def neighbour_graph(idx: np.ndarray) -> "igraph.Graph":
    """Undirected kNN graph of ``idx`` (cells x k, self excluded): an edge if either end lists the other.

    The edges are sorted, so the graph (and Leiden's seeded result on it) does not depend on the
    order the neighbours were listed in.
    """
    import igraph

    src = np.repeat(np.arange(len(idx)), idx.shape[1])
    pairs = {(min(a, b), max(a, b)) for a, b in zip(src.tolist(), idx.ravel().tolist()) if a != b}
    return igraph.Graph(n=len(idx), edges=sorted(pairs))


def leiden(graph: "igraph.Graph", resolution: float, seed: int, n_iterations: int = -1) -> np.ndarray:
    """Leiden communities (RB configuration model) as integer labels, largest community first.

    ``n_iterations=-1`` iterates until the partition stops changing; a positive number stops
    earlier (leidenalg's default is 2).
    """
    import leidenalg

    part = leidenalg.find_partition(graph, leidenalg.RBConfigurationVertexPartition,
                                    resolution_parameter=resolution, seed=seed, n_iterations=n_iterations)
    return np.asarray(part.membership)


def leiden_clusters(X: np.ndarray, n_neighbors: int = 15, resolution: float = 1.0, seed: int = 0,
                    n_iterations: int = -1, knn: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Leiden labels of the rows of ``X`` on their kNN graph (``knn``: precomputed ``(dist, idx)``)."""
    _, idx = knn if knn is not None else nearest_neighbours(X, n_neighbors)
    return leiden(neighbour_graph(idx), resolution, seed, n_iterations)
