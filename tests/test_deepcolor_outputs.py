"""DeepCOLOR's speed-ups change no result: the count-table likelihood and the chunked p_mat writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellfate.simulate.tissue import TissueSpec, simulate_tissue
from cellfate.spatial.count_table import CountTable, nb_nll_fixed
from cellfate.spatial.map_outputs import row_entropy, write_p_mat
from cellfate.spatial.model import DeepColor, DeepColorConfig, p_mat_from_map2sp, type_distributions, type_shares
from cellfate.spatial.module import nb_log_prob
from cellfate.spatial.train import TrainConfig


def _counts(seed: int, shape: tuple[int, int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.rand(shape, generator=gen) * 6.0, generator=gen)


def test_count_table_likelihood_and_gradients_equal_the_dense_ones() -> None:
    x = _counts(0, (40, 25))
    results = []
    for use_table in (False, True):
        log_theta = torch.linspace(-1.0, 2.0, 25).requires_grad_()
        mu = (torch.rand((40, 25), generator=torch.Generator().manual_seed(1)) * 5 + 0.1).requires_grad_()
        theta = log_theta.exp()
        nll = (nb_nll_fixed(x, mu, theta, CountTable(x)) if use_table
               else -nb_log_prob(x, mu, theta, constant=False).sum(-1).mean())
        nll.backward()
        results.append((nll.detach(), log_theta.grad, mu.grad))
    for dense, table in zip(*results):
        assert torch.allclose(dense, table, rtol=1e-5, atol=1e-5)


def test_count_table_of_some_rows_equals_the_table_built_from_them() -> None:
    x = _counts(2, (30, 12))
    rows = torch.tensor([3, 7, 8, 21, 29])
    theta = torch.linspace(0.3, 4.0, 12)
    assert torch.allclose(CountTable(x, keep_codes=True).rows(rows).lgamma_sum(theta),
                          CountTable(x[rows]).lgamma_sum(theta), rtol=1e-6)
    assert not torch.allclose(CountTable(x).lgamma_sum(theta), CountTable(x[rows]).lgamma_sum(theta))


@pytest.fixture(scope="module")
def small_fit():
    torch.set_num_threads(1)
    spots, cells = simulate_tissue(TissueSpec(grid=(6, 6), n_reference_cells=120, n_genes=100, seed=1))
    model = DeepColor.fit(cells, spots, DeepColorConfig(train=TrainConfig(epochs_sc=3, epochs_map=3, batch_size=64)))
    zl = model.latent(cells)
    return model, zl, model.map_inputs(cells, zl), cells.obs["cell_type"]


@pytest.mark.parametrize("chunk", [7, 4096])
def test_chunked_writer_equals_the_whole_array_outputs(small_fit, tmp_path, chunk) -> None:
    model, zl, features, labels = small_fit
    summary = write_p_mat(model, features, zl, labels, tmp_path / "p.npy", chunk=chunk)
    map2sp = model.map2sp(features)
    p = p_mat_from_map2sp(map2sp)
    written = np.load(tmp_path / "p.npy", mmap_mode="r")
    assert written.dtype == np.float32 and written.shape == p.shape
    np.testing.assert_allclose(written, p, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(summary.map_total, map2sp.sum(1), rtol=1e-5)
    np.testing.assert_allclose(summary.entropy, row_entropy(p), rtol=1e-5)
    np.testing.assert_allclose(summary.type_share.to_numpy(), type_shares(map2sp, labels).to_numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(summary.type_distribution.to_numpy(), type_distributions(p, labels).to_numpy(),
                               rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(summary.imputed, model.imputed(zl, map2sp), rtol=1e-5, atol=1e-6)
    assert list(summary.type_share.columns) == sorted(set(labels))
