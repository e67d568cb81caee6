"""The condition options of environment dynamics: partner clusters, observed neighbourhoods, and
how much of c the cell's own state already explains."""

from __future__ import annotations

import numpy as np

from cellfate.spatial import environment as env


def test_cluster_condition_separates_partner_sub_populations() -> None:
    rng = np.random.default_rng(0)
    n_spots = 40
    # two fibroblast sub-populations (distinct latent states) in two halves of the spots
    left, right = np.zeros(n_spots), np.zeros(n_spots)
    left[:20], right[20:] = 1 / 20, 1 / 20
    p_partner = np.vstack([np.tile(left, (30, 1)), np.tile(right, (30, 1)), np.full((20, n_spots), 1 / n_spots)])
    labels = np.array(["fibroblast"] * 60 + ["macrophage"] * 20)
    latent = np.vstack([rng.normal(0, 0.1, (30, 3)), rng.normal(3, 0.1, (30, 3)), rng.normal(-3, 0.1, (20, 3))])
    p_cells = np.vstack([np.tile(left, (5, 1)), np.tile(right, (5, 1))])
    c, names, types = env.cluster_colocalization_condition(p_cells, p_partner, labels, latent,
                                                           ["fibroblast", "macrophage"], clusters_per_type=2, seed=0)
    assert names == ["fibroblast:0", "fibroblast:1", "macrophage:0", "macrophage:1"]
    assert types == ["fibroblast", "fibroblast", "macrophage", "macrophage"]
    fib = c[:, :2]
    # a lineage cell on the left colocalizes with one fibroblast group only (log2 of 2 = 1 vs -inf floor)
    assert np.allclose(np.sort(fib[:5], axis=1)[:, 1], 1.0) and (np.sort(fib[:5], axis=1)[:, 0] < -100).all()
    assert (np.argmax(fib[:5], 1) != np.argmax(fib[5:], 1)[0]).all()


def test_neighbourhood_condition_counts_the_nearest_cells() -> None:
    xy = np.array([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [5.0, 5.0], [5.1, 5.0], [5.2, 5.0]])
    labels = np.array(["lineage", "fibroblast", "fibroblast", "lineage", "macrophage", "macrophage"])
    c = env.neighbourhood_condition(xy[[0, 3]], xy, labels, ["fibroblast", "macrophage"], n_neighbors=2)
    assert np.allclose(c, [[1.0, 0.0], [0.0, 1.0]])


def test_state_r2_flags_a_condition_that_is_a_function_of_state() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(300, 3))
    c = np.c_[np.sin(z[:, 0]) + z[:, 1], rng.normal(size=300)]  # first: a function of z; second: independent
    r2 = env.state_explains_condition(z, c)
    assert r2[0] > 0.8 and abs(r2[1]) < 0.2, r2


def test_cells_are_mapped_without_the_unspliced_counts_the_test_explains() -> None:
    import anndata as ad
    import scipy.sparse as sp

    from cellfate.spatial.model import DeepColorConfig
    from cellfate.spatial.pipeline import _mapping_view

    class Model:  # only latent() and config.type_key are read
        config = DeepColorConfig()

        def latent(self, view):
            return np.asarray(view.X.sum(1))

    s = np.array([[5, 0, 2], [1, 3, 0]])
    u = np.array([[1, 1, 0], [0, 2, 4]])
    cells = ad.AnnData(X=sp.csr_matrix(s + u + 1), layers={"spliced": sp.csr_matrix(s), "unspliced": sp.csr_matrix(u)})
    cells.obs["cell_type"] = ["a", "b"]
    view, z = _mapping_view(cells, Model(), np.zeros((2, 1)))
    assert np.array_equal(view.X.toarray(), s + 1) and np.array_equal(z.ravel(), (s + 1).sum(1))
    assert list(view.obs["cell_type"]) == ["a", "b"]  # within-type map components read the types
    spliced_x = ad.AnnData(X=sp.csr_matrix(s), layers={"spliced": sp.csr_matrix(s), "unspliced": sp.csr_matrix(u)})
    assert _mapping_view(spliced_x, Model(), np.zeros((2, 1)))[0] is spliced_x  # X already spliced: unchanged


def test_crossfit_folds_hold_every_cell_out_once() -> None:
    folds = env.crossfit_folds(103, 5, seed=0)
    assert len(folds) == 5 and all(20 <= len(f) <= 21 for f in folds)
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(103))


def test_stratum_size_sets_the_strata_and_permutations_stay_inside_them() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 3))
    for cells in (10, 20):
        strata = env.state_strata(z, cells, seed=0)
        assert len(np.unique(strata)) == 200 // cells
        values = np.arange(200.0)
        permuted = env.permute_within(values, strata, rng)
        for g in np.unique(strata):
            assert set(permuted[strata == g]) == set(values[strata == g])


class _CountModel:
    """A stand-in for VICDYF: the unspliced 'likelihood' is a squared error of each cell's log
    total against a * c[:, 0] (the condition's first column explains the counts, the second not)."""

    def __init__(self, a: float) -> None:
        self.a = a

    def eval(self) -> None:
        pass

    def encode(self, s, log_s=None):
        import torch

        return (torch.log1p(s[:, :2]), None)

    def loss(self, s, u, cell_factor, gene_factor, c, log_s=None, sample=False):
        import torch

        return {"nll_u": ((torch.log1p(u.sum(1)) - 2.0 - self.a * c[:, 0]) ** 2).mean()}


def test_crossfitted_permutation_test_finds_the_column_that_explains_the_counts() -> None:
    rng = np.random.default_rng(0)
    n = 200
    c = rng.normal(size=(n, 2))
    s = rng.poisson(5.0, size=(n, 4)).astype(float)
    u = rng.poisson(np.exp(2.0 + 0.5 * c[:, :1]) / 4, size=(n, 4)).astype(float)
    folds = env.crossfit_folds(n, 2, seed=0)
    held = [env.HeldOut.of(_CountModel(0.5), s[f], u[f], c[f]) for f in folds]
    test = env.conditional_permutation_test(held, {"driver": [np.array([1.0, 0.0])] * 2,
                                                   "other": [np.array([0.0, 1.0])] * 2}, n_permutations=50,
                                            seed=0).set_index("direction")
    assert test.loc["driver", "p_value"] == 1 / 51 and test.loc["driver", "nll_gain"] > 0
    assert test.loc["other", "p_value"] > 0.05


def test_a_partner_is_named_only_when_it_carries_mode_one() -> None:
    """Every column significant (as a noisy colocalization gives with all cells held out): only
    the partner carrying more than an equal share of mode 1 is named."""
    import pandas as pd

    from cellfate.spatial.pipeline import name_partners

    modes = pd.DataFrame({"mode": [1, 1, 1, 2, 2, 2], "partner": ["mac", "fib", "T"] * 2,
                          "weight": [-0.20, 0.97, 0.16, 0.9, 0.1, 0.4], "partner_p_value": [0.005, 0.005, 0.005] * 2,
                          "mode_p_value": [0.005] * 3 + [0.5] * 3})
    out = name_partners(modes, 0.05)
    assert out["significant"].tolist() == [True, True, True, False, False, False]
    assert out.loc[out["named"], "partner"].tolist() == ["fib"]
    modes["mode_p_value"] = 0.2  # mode 1 not significant: nothing named
    assert not name_partners(modes, 0.05)["named"].any()
    modes["mode_p_value"], modes["partner_p_value"] = 0.005, 0.02  # 0.02 > 0.05 / 3
    assert not name_partners(modes, 0.05)["significant"].any()
