"""Colocalization without a dense N x N matrix equals the dense definition; pair clusters; validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellfate.spatial import colocalization as coloc
from cellfate.spatial import validation
from cellfate.spatial.pair_clusters import pair_clusters


@pytest.fixture
def cells() -> tuple[np.ndarray, np.ndarray]:
    """60 cells of three types over 25 spots, each type concentrated on its own spots."""
    rng = np.random.default_rng(0)
    labels = np.repeat(["A", "B", "C"], 20)
    home = {"A": np.arange(0, 8), "B": np.arange(5, 13), "C": np.arange(15, 25)}
    p = rng.random((60, 25)) * 0.05
    for i, t in enumerate(labels):
        p[i, home[t]] += rng.random(len(home[t]))
    return p / p.sum(1, keepdims=True), labels


def dense_scores(p: np.ndarray) -> np.ndarray:
    return np.log2(p @ p.T) + np.log2(p.shape[1])


def test_pair_scores_match_the_definition(cells) -> None:
    p, _ = cells
    i, j = np.array([0, 3, 40]), np.array([1, 30, 59])
    assert np.allclose(coloc.pair_scores(p, i, j), dense_scores(p)[i, j])


def test_blockwise_edges_equal_dense_edges(cells) -> None:
    p, labels = cells
    names = pd.Index([f"c{i}" for i in range(len(p))])
    edges = coloc.colocalization_edges(p, names, labels, threshold=1.0, max_cells=None, memory_mb=0)  # 1-row blocks
    full = dense_scores(p)
    iu = np.triu_indices(len(p), 1)
    want = {(names[a], names[b]) for a, b in zip(*iu) if full[a, b] > 1.0 and labels[a] != labels[b]}
    assert set(zip(edges["cell_i"], edges["cell_j"])) == want
    assert len(want) > 0
    assert (edges["type_i"] != edges["type_j"]).all()
    got = {(a, b): s for a, b, s in zip(edges["cell_i"], edges["cell_j"], edges["score"])}
    a, b = next(iter(want))
    assert got[(a, b)] == pytest.approx(full[names.get_loc(a), names.get_loc(b)], rel=1e-5)


def test_edges_on_sampled_cells(cells) -> None:
    p, labels = cells
    names = pd.Index([f"c{i}" for i in range(len(p))])
    edges = coloc.colocalization_edges(p, names, labels, max_cells=30, seed=1)
    used = set(edges["cell_i"]) | set(edges["cell_j"])
    assert len(used) <= 30


def test_type_matrix_is_the_mean_pair_ratio(cells) -> None:
    p, labels = cells
    total = np.linspace(0.5, 2.0, len(p))  # the first 5% are the least mapped
    matrix = coloc.type_colocalization(p, labels, total, drop_fraction=0.05)
    keep = total > np.quantile(total, 0.05)
    ratio = 2 ** dense_scores(p)
    for a in "ABC":
        for b in "ABC":
            ia = np.flatnonzero(keep & (labels == a))
            ib = np.flatnonzero(keep & (labels == b))
            block = ratio[np.ix_(ia, ib)]
            mean = (block.sum() - np.trace(block)) / (block.size - len(ia)) if a == b else block.mean()
            assert matrix.loc[a, b] == pytest.approx(np.log2(mean), rel=1e-6)
    assert matrix.loc["A", "B"] > matrix.loc["A", "C"]


def test_colocalization_auroc_and_spearman() -> None:
    types = ["A", "B", "C", "D"]
    m = pd.DataFrame([[2, 1.5, -1, -2], [1.5, 2, -1.5, -1], [-1, -1.5, 2, 1.2], [-2, -1, 1.2, 2]],
                     index=types, columns=types, dtype=float)
    out = validation.colocalization_agreement(m, [("A", "B"), ("C", "D")], m)
    assert out["colocalization_auroc"] == 1.0 and out["colocalization_spearman"] == pytest.approx(1.0)


def test_pair_clusters_separate_two_kinds_of_pair() -> None:
    rng = np.random.default_rng(0)
    latent = pd.DataFrame(np.r_[rng.normal(0, 0.1, (40, 4)), rng.normal(5, 0.1, (40, 4))],
                          index=[f"c{i}" for i in range(80)])
    edges = pd.DataFrame({"cell_i": [f"c{i}" for i in range(0, 40, 2)] + [f"c{i}" for i in range(40, 80, 2)],
                          "cell_j": [f"c{i}" for i in range(1, 40, 2)] + [f"c{i}" for i in range(41, 80, 2)],
                          "type_i": ["A"] * 20 + ["C"] * 20, "type_j": ["B"] * 20 + ["D"] * 20, "score": 2.0})
    out = pair_clusters(edges, latent, n_neighbors=5, resolution=0.1, umap=False)
    assert {"cluster", "umap_1", "umap_2", "pair_type"} <= set(out.columns)
    first, second = out["cluster"][:20], out["cluster"][20:]
    assert first.nunique() == 1 and second.nunique() == 1 and first.iloc[0] != second.iloc[0]
