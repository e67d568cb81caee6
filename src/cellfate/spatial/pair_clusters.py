"""Clusters of colocalized cell pairs: what kinds of neighbourhoods recur in the tissue.

Each colocalization edge (i, j) becomes one point with feature z_i + z_j (order-free, so the pair
is described by both partners' states); a kNN graph with Leiden (resolution 0.1 by default, coarse
on purpose) groups the pairs and UMAP draws them. The neighbours, graph and Leiden are
:mod:`cellfate.neighbours` and the layout is :mod:`cellfate.umap_layout` on the same neighbours,
rather than scanpy / umap-learn, whose imports and numba compilation cost more than the
clustering itself at this size. Edges are sampled (seeded) above ``max_pairs`` so the
cost stays bounded whatever the number of edges.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cellfate.errors import CellfateError
from cellfate.neighbours import leiden_clusters, nearest_neighbours
from cellfate.umap_layout import umap_layout

log = logging.getLogger(__name__)


def pair_clusters(edges: pd.DataFrame, latent: pd.DataFrame, max_pairs: int = 20_000, n_neighbors: int = 15,
                  resolution: float = 0.1, seed: int = 0, umap: bool = True) -> pd.DataFrame:
    """The (sampled) edges with ``pair_type``, ``cluster``, ``umap_1`` and ``umap_2`` added.

    ``latent`` is cells x latent (``X_zl``) indexed by cell name. ``umap=False`` skips the
    embedding (NaN coordinates) when only the clusters are wanted.
    """
    if len(edges) == 0:
        raise CellfateError("no colocalization edges to cluster; lower spatial.colocalization.threshold")
    if len(edges) > max_pairs:
        edges = edges.iloc[np.sort(np.random.default_rng(seed).choice(len(edges), max_pairs, replace=False))]
    edges = edges.reset_index(drop=True)
    feature = latent.loc[edges["cell_i"]].to_numpy() + latent.loc[edges["cell_j"]].to_numpy()
    pair_type = [" | ".join(sorted(t)) for t in zip(edges["type_i"], edges["type_j"])]
    out = edges.assign(pair_type=pair_type)
    if len(edges) < 3:
        return out.assign(cluster="0", umap_1=0.0, umap_2=0.0)
    knn = nearest_neighbours(feature, n_neighbors)
    clusters = leiden_clusters(feature, resolution=resolution, seed=seed, knn=knn)
    xy = umap_layout(feature, seed=seed, knn=knn) if umap else np.full((len(edges), 2), np.nan)
    log.info("%d pairs in %d clusters", len(edges), len(set(clusters)))
    return out.assign(cluster=clusters.astype(str), umap_1=xy[:, 0], umap_2=xy[:, 1])

