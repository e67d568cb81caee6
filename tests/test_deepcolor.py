"""DeepCOLOR: the networks, the fit on a small simulated tissue against its truth, save/load, bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from cellfate.errors import CellfateError
from cellfate.nn.likelihoods import nb_log_prob
from cellfate.simulate.tissue import TissueSpec, simulate_tissue
from cellfate.spatial import validation
from cellfate.spatial.colocalization import type_colocalization
from cellfate.spatial.model import (DeepColor, DeepColorConfig, match_inputs, p_mat_from_map2sp, type_distributions,
                                    type_shares, type_shares_from_p)
from cellfate.spatial.module import DeepColorModule, ModuleConfig
from cellfate.spatial.train import TrainConfig

FAST = DeepColorConfig(train=TrainConfig(epochs_sc=60, epochs_map=60, batch_size=128, lr=3e-3, patience=15))


@pytest.fixture(scope="module")
def tissue() -> tuple[ad.AnnData, ad.AnnData]:
    return simulate_tissue(TissueSpec(grid=(12, 12), n_reference_cells=500, n_genes=150, seed=3))


@pytest.fixture(scope="module")
def fitted(tissue) -> tuple[DeepColor, np.ndarray, np.ndarray]:
    torch.set_num_threads(1)
    spots, cells = tissue
    model = DeepColor.fit(cells, spots, FAST)
    zl = model.latent(cells)
    return model, zl, model.map2sp(model.map_inputs(cells, zl))


def test_nb_log_prob_matches_scipy() -> None:
    x = torch.tensor([0.0, 3.0, 17.0])
    mu = torch.tensor([1.5, 4.0, 10.0])
    theta = torch.tensor([2.0, 0.5, 8.0])
    p = (theta / (theta + mu)).numpy()
    expected = stats.nbinom.logpmf(x.numpy(), theta.numpy(), p)
    assert np.allclose(nb_log_prob(x, mu, theta).numpy(), expected, atol=1e-4)


def test_losses_return_named_parts() -> None:
    module = DeepColorModule(ModuleConfig(n_genes=20, n_spots=7))
    x = torch.poisson(torch.full((9, 20), 3.0))
    sc = module.sc_loss(x)
    assert set(sc) == {"loss", "nll", "kl"} and torch.isfinite(sc["loss"])
    z, _ = module.encode(x)
    spatial = module.spatial_loss(module.map_features(x, z), module.map_rate(x, z), torch.poisson(torch.full((7, 20), 9.0)), torch.full((7,), 9.0))
    assert set(spatial) == {"loss", "nll"} and torch.isfinite(spatial["loss"])


def test_outputs_are_distributions(fitted, tissue) -> None:
    model, zl, map2sp = fitted
    spots, cells = tissue
    assert zl.shape == (cells.n_obs, 10)
    assert map2sp.shape == (cells.n_obs, spots.n_obs)
    assert np.allclose(map2sp.sum(0), 1.0, atol=1e-4)  # each spot is a mixture of all cells
    assert np.allclose(p_mat_from_map2sp(map2sp).sum(1), 1.0, atol=1e-5)  # each cell over spots
    shares = type_shares(map2sp, cells.obs["cell_type"])
    assert np.allclose(shares.sum(1), 1.0, atol=1e-4)
    blocked = type_shares_from_p(p_mat_from_map2sp(map2sp), map2sp.sum(1), cells.obs["cell_type"], chunk=37)
    assert np.allclose(blocked.to_numpy(), shares.to_numpy(), atol=1e-5)
    imputed = model.imputed(zl, map2sp)
    assert imputed.shape == (spots.n_obs, len(model.genes)) and np.isfinite(imputed).all()


def test_map_and_colocalization_recover_the_truth(fitted, tissue) -> None:
    model, zl, map2sp = fitted
    spots, cells = tissue
    p = p_mat_from_map2sp(map2sp)
    shares = type_shares(map2sp, cells.obs["cell_type"])
    types, pairs, truth = validation.truth_frames(dict(spots.uns))
    corr = validation.map_correlation(shares, validation.true_fractions(spots.obsm["true_abundance"]), types)
    assert corr.mean() > 0.7, corr
    matrix = type_colocalization(p, cells.obs["cell_type"].to_numpy(), map2sp.sum(1))
    agreement = validation.colocalization_agreement(matrix, pairs, truth)
    assert agreement["colocalization_auroc"] >= 0.9, agreement


def test_save_load_round_trip(fitted, tissue, tmp_path) -> None:
    model, zl, map2sp = fitted
    spots, cells = tissue
    model.save(tmp_path / "model")
    again = DeepColor.load(tmp_path / "model")
    assert again.config == model.config
    assert list(again.genes) == list(model.genes) and list(again.spot_names) == list(model.spot_names)
    assert np.array_equal(again.latent(cells), zl)
    assert np.array_equal(again.map2sp(again.map_inputs(cells)), map2sp)
    assert len(again.history) == len(model.history) > 0


def test_config_from_dict_rejects_unknown_keys() -> None:
    cfg = DeepColorConfig.from_dict({"epochs_sc": 3, "likelihood": "poisson", "seed": 5})
    assert cfg.train.epochs_sc == 3 and cfg.train.seed == 5 and cfg.likelihood == "poisson"
    with pytest.raises(CellfateError, match="epoch_sc"):
        DeepColorConfig.from_dict({"epoch_sc": 3})


# --- bad input ----------------------------------------------------------------------------------
def _pair(n_genes: int = 30) -> tuple[ad.AnnData, ad.AnnData]:
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(n_genes)]
    cells = ad.AnnData(sp.csr_matrix(rng.poisson(5.0, (40, n_genes)).astype(np.float32)))
    cells.var_names = genes
    spots = ad.AnnData(sp.csr_matrix(rng.poisson(20.0, (12, n_genes)).astype(np.float32)))
    spots.var_names = genes
    return cells, spots


def test_genes_not_shared_is_a_clear_error() -> None:
    cells, spots = _pair()
    spots.var_names = [f"other{i}" for i in range(spots.n_vars)]
    with pytest.raises(CellfateError, match=r"spots\.h5ad: no gene is shared with cells\.h5ad"):
        match_inputs(cells, spots, cells_path="cells.h5ad", spots_path="spots.h5ad")


def test_non_integer_counts_are_a_clear_error() -> None:
    cells, spots = _pair()
    cells.X = cells.X.multiply(0.37).tocsr()
    with pytest.raises(CellfateError, match=r"cells\.h5ad: single-cell counts has non-integer values"):
        match_inputs(cells, spots, cells_path="cells.h5ad", spots_path="spots.h5ad")


def test_empty_spots_are_a_clear_error() -> None:
    cells, spots = _pair()
    x = spots.X.toarray()
    x[[2, 5]] = 0
    spots.X = sp.csr_matrix(x)
    spots.obs_names = [f"spot{i}" for i in range(spots.n_obs)]
    with pytest.raises(CellfateError, match=r"spots\.h5ad: 2 spots have no counts .*'spot2'"):
        match_inputs(cells, spots, cells_path="cells.h5ad", spots_path="spots.h5ad")


def test_error_messages_are_one_line() -> None:
    cells, spots = _pair()
    spots.var_names = [f"other{i}" for i in range(spots.n_vars)]
    with pytest.raises(CellfateError) as err:
        match_inputs(cells, spots, cells_path="a.h5ad", spots_path="b.h5ad")
    assert "\n" not in str(err.value)
