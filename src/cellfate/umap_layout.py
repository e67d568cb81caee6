"""A 2-D UMAP layout of cell embeddings, in numpy (McInnes, Healy & Melville 2018).

Why not ``umap-learn``: it compiles its kernels with numba in every new process, which took 30-120
seconds on the demo's two shared cores -- longer than embedding, classifying and perturbing
together. The algorithm itself is small: a k-nearest-neighbour graph with UMAP's fuzzy
memberships (each cell's distances shifted by its nearest neighbour's and scaled so the
memberships sum to log2(k)), symmetrised by the fuzzy union, then a layout optimised by
attraction along sampled edges and repulsion from random cells under the low-dimensional kernel
``1 / (1 + a d^(2b))``. Here each epoch updates all sampled edges at once (as GPU UMAPs do) rather
than one at a time, which for a figure of up to ~10^5 cells takes seconds. Seeded and
deterministic. Used for every 2-D layout of the workflow (cell embeddings, VICDYF's latent space,
DeepCOLOR's colocalized pairs). For very large sets use ``umap-learn`` on the stored coordinates.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import curve_fit

from cellfate.neighbours import nearest_neighbours


def curve_parameters(min_dist: float = 0.3, spread: float = 1.0) -> tuple[float, float]:
    """``a, b`` of ``1 / (1 + a d^(2b))`` fitted to UMAP's target curve for ``min_dist`` and ``spread``."""
    d = np.linspace(0, spread * 3, 300)
    target = np.where(d < min_dist, 1.0, np.exp(-(d - min_dist) / spread))
    (a, b), _ = curve_fit(lambda x, a, b: 1.0 / (1.0 + a * x ** (2 * b)), d, target, p0=(1.0, 1.0), maxfev=5000)
    return float(a), float(b)


def pca_2d(X: np.ndarray) -> np.ndarray:
    """The first two principal component scores of ``X`` (rows centred here), signs as
    scikit-learn's PCA sets them (each component's largest loading positive)."""
    centred = X - X.mean(0)
    u, sv, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    return (u[:, :2] * sv[:2]) * signs[:2]


def fuzzy_graph(X: np.ndarray, n_neighbors: int = 15,
                knn: tuple[np.ndarray, np.ndarray] | None = None) -> sp.coo_matrix:
    """UMAP's symmetric fuzzy k-NN graph of the rows of ``X`` (euclidean), or of a given
    ``knn = (dist, idx)`` (self excluded, nearest first)."""
    n = len(X)
    dist, idx = knn if knn is not None else nearest_neighbours(X, n_neighbors)
    k = idx.shape[1]
    rho = dist[:, 0]
    target = np.log2(k)
    lo, hi = np.zeros(n), np.full(n, np.inf)
    sigma = np.ones(n)
    shifted = np.maximum(dist - rho[:, None], 0.0)
    for _ in range(64):  # bisection for all cells at once
        total = np.exp(-shifted / sigma[:, None]).sum(1)
        too_big = total > target
        hi = np.where(too_big, sigma, hi)
        lo = np.where(too_big, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2, (lo + hi) / 2)
    mean_dist = dist.mean()
    sigma = np.maximum(sigma, 1e-3 * mean_dist)
    weights = np.exp(-shifted / sigma[:, None])
    graph = sp.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    union = graph + graph.T - graph.multiply(graph.T)
    return sp.coo_matrix(union)


def _clip4(x: np.ndarray) -> np.ndarray:
    """``np.clip(x, -4, 4)`` in place (the same values, no temporaries)."""
    return np.minimum(np.maximum(x, -4.0, out=x), 4.0, out=x)


def umap_layout(
    X: np.ndarray,
    *,
    n_neighbors: int = 15,
    n_epochs: int | None = None,
    min_dist: float = 0.3,
    negative_rate: int = 5,
    seed: int = 0,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """2-D coordinates (cells x 2, float32) of the rows of ``X`` (``knn``: precomputed neighbours)."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if n < 3:
        return np.zeros((n, 2), dtype=np.float32)
    rng = np.random.default_rng([seed, 5])
    graph = fuzzy_graph(X, n_neighbors, knn)
    keep = graph.data >= graph.data.max() / 200.0  # UMAP drops edges too weak to be sampled
    head, tail, weight = graph.row[keep], graph.col[keep], graph.data[keep]
    n_epochs = n_epochs or 200
    a, b = curve_parameters(min_dist)
    init = pca_2d(X)
    Y = 10.0 * init / np.abs(init).max() + rng.normal(0, 1e-4, size=init.shape)
    probability = weight / weight.max()
    # x and y as separate contiguous columns: each (edges x 2) array op of the plain formulation
    # becomes two 1-D ones with the same values (bit-identical layout), at about half the cost
    x, y = Y[:, 0].copy(), Y[:, 1].copy()
    for epoch in range(n_epochs):
        alpha = 1.0 - epoch / n_epochs
        sampled = rng.random(len(weight)) < probability
        i, j = head[sampled], tail[sampled]
        xi, yi = x[i], y[i]
        dx, dy = xi - x[j], yi - y[j]
        d2 = np.maximum(dx * dx + dy * dy, 1e-12)
        coef = -2.0 * a * b * d2 ** (b - 1.0) / (1.0 + a * d2**b)
        sx, sy = _clip4(coef * dx) * alpha, _clip4(coef * dy) * alpha
        ux = np.bincount(i, weights=sx, minlength=n) - np.bincount(j, weights=sx, minlength=n)
        uy = np.bincount(i, weights=sy, minlength=n) - np.bincount(j, weights=sy, minlength=n)
        neg_i = np.repeat(i, negative_rate)
        neg_k = rng.integers(0, n, size=len(neg_i))
        dx, dy = np.repeat(xi, negative_rate) - x[neg_k], np.repeat(yi, negative_rate) - y[neg_k]
        d2 = dx * dx + dy * dy
        coef = 2.0 * b / ((0.001 + d2) * (1.0 + a * d2**b))
        sx, sy = _clip4(coef * dx) * alpha, _clip4(coef * dy) * alpha
        same = neg_i == neg_k
        sx[same] = 0.0
        sy[same] = 0.0
        x += ux + np.bincount(neg_i, weights=sx, minlength=n)
        y += uy + np.bincount(neg_i, weights=sy, minlength=n)
    Y = np.stack([x, y], axis=1)
    return Y.astype(np.float32)
