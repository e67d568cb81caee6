"""cellfate.neighbours: the one kNN graph + Leiden that the fluctuation and pair clusters share."""

from __future__ import annotations

import numpy as np

from cellfate.neighbours import leiden_clusters, nearest_neighbours, neighbour_graph


def test_neighbours_exclude_self_and_the_graph_is_symmetric_and_sorted() -> None:
    x = np.random.default_rng(0).normal(size=(30, 3))
    dist, idx = nearest_neighbours(x, 5)
    assert idx.shape == (30, 5) and not (idx == np.arange(30)[:, None]).any()
    assert (np.diff(dist, axis=1) >= 0).all()
    edges = neighbour_graph(idx).get_edgelist()
    assert edges == sorted(edges) and all(a < b for a, b in edges)
    assert all((min(i, j), max(i, j)) in set(edges) for i in range(30) for j in idx[i])


def test_leiden_finds_separated_groups_whatever_the_row_order() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) + 12.0])
    labels = leiden_clusters(x, n_neighbors=10, resolution=0.5, seed=0)
    assert len(set(labels[:60])) == 1 and len(set(labels[60:])) == 1 and labels[0] != labels[-1]
    order = rng.permutation(len(x))
    again = leiden_clusters(x[order], n_neighbors=10, resolution=0.5, seed=0)
    # the same partition (labels may be renumbered)
    assert len(set(zip(again, labels[order]))) == 2
