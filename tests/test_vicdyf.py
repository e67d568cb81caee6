"""VICDYF: module maths, training safeguards, AnnData in/out, save/load, bad input, a real file."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cellfate.dynamics import train as train_mod
from cellfate.dynamics.embedding import knn_indices, project_velocity
from cellfate.dynamics.model import OUTPUT_KEYS, VICDYF
from cellfate.dynamics.module import VicdyfConfig, VicdyfModule
from cellfate.dynamics.preprocess import select_genes
from cellfate.dynamics.train import CountTensors, TrainingPlan
from cellfate.errors import CellfateError

DATA = Path(__file__).parent / "data" / "scvelo" / "pancreas_50obs_top2000.h5ad"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "scvelo" / "pancreas_50obs.h5ad"
FAST = dict(epochs_phase1=3, epochs_phase2=3, progress=False, batch_size=32)


def toy(n_cells: int = 60, n_genes: int = 12, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 1, n_cells)[:, None]
    rate = 1 + 5 * np.abs(np.sin(3 * t + rng.uniform(0, 3, n_genes)))
    adata = ad.AnnData(obs={"t": t.ravel()}, var={"symbol": [f"G{g}" for g in range(n_genes)]})
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    adata.var_names = [f"ENSMUSG{g:011d}" for g in range(n_genes)]
    adata.layers["spliced"] = rng.poisson(rate).astype(np.int32)
    adata.layers["unspliced"] = rng.poisson(rate * 0.4).astype(np.int32)
    return adata


@pytest.fixture(scope="module")
def fitted():
    adata = toy()
    model = VICDYF(adata)
    model.train(TrainingPlan(**FAST))
    model.annotate(adata, n_samples=5, embed=False)
    return model, adata


def test_jvp_is_exact_and_the_finite_difference_agrees() -> None:
    torch.manual_seed(0)
    module = VicdyfModule(VicdyfConfig(n_genes=30)).double()
    z, t = torch.randn(6, 10, dtype=torch.double), torch.randn(6, 10, dtype=torch.double)
    value, tangent = module.decoder.forward_with_tangent(z, t)
    ref_value, ref_tangent = torch.func.jvp(module.decoder, (z,), (t,))
    torch.testing.assert_close(value, ref_value)
    torch.testing.assert_close(tangent, ref_tangent)
    fd = VicdyfModule(VicdyfConfig(n_genes=30, velocity="finite_difference")).double()
    fd.load_state_dict(module.state_dict())
    d = 1e-4 * t
    _, central = fd.rate_and_velocity(z, d)  # dec(z + d) - dec(z - d), no 1/2: twice J d
    torch.testing.assert_close(central, 2 * module.rate_and_velocity(z, d)[1], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("likelihood,diffusion", [("poisson", "posterior"), ("nb", "posterior"), ("poisson", "learnt")])
def test_loss_has_named_finite_parts(likelihood: str, diffusion: str) -> None:
    module = VicdyfModule(VicdyfConfig(n_genes=12, likelihood=likelihood, diffusion=diffusion))
    data = CountTensors.from_arrays(toy().layers["spliced"], toy().layers["unspliced"])
    parts = module.loss(*data.batch(torch.arange(10)))
    assert set(parts) == {"nll_s", "nll_u", "kl_z", "kl_d", "total"}
    assert all(torch.isfinite(v) for v in parts.values())
    torch.testing.assert_close(parts["total"], parts["nll_s"] + parts["nll_u"] + parts["kl_z"] + parts["kl_d"])
    assert set(module.loss(*data.batch(torch.arange(10)), use_unspliced=False)) == {"nll_s", "kl_z", "total"}


def test_learnt_diffusion_is_the_prior_of_a_displacement_that_reads_the_unspliced_counts() -> None:
    """diffusion="learnt": KL(q(d~|z, u) || N(drift(z), diffusion(z)^2)), analytic and exact; the
    displacement depends on u (the original's cannot), the dynamics net only through the KL."""
    from cellfate.dynamics.module import kl_normal

    m, s, pm, ps = (torch.randn(4, 3, dtype=torch.double) for _ in range(4))
    s, ps = s.exp(), ps.exp()
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(m, s), torch.distributions.Normal(pm, ps))
    torch.testing.assert_close(kl_normal(m, s, pm, ps), reference.sum(-1))
    torch.manual_seed(0)
    module = VicdyfModule(VicdyfConfig(n_genes=12, diffusion="learnt")).eval()
    z, u = torch.randn(5, 10), torch.poisson(torch.full((5, 12), 3.0))
    d1, _ = module._displacement(z, u, None, sample=False)
    d2, _ = module._displacement(z, u + 5, None, sample=False)
    assert not torch.allclose(d1, d2)
    with pytest.raises(ValueError, match="diffusion must be one of"):
        VicdyfConfig(n_genes=3, diffusion="prior")


def test_factored_poisson_equals_the_poisson_of_the_full_mean() -> None:
    """The loss never forms N * rate; it must still be -log Poisson(x | N * rate) without log(x!)."""
    from cellfate.nn.likelihoods import poisson_nll, poisson_nll_factored

    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.poisson(2.0, size=(7, 9)), dtype=torch.double)
    rate = torch.as_tensor(rng.uniform(0.1, 3.0, size=(7, 9)))
    cell, gene = torch.as_tensor(rng.uniform(5, 50, size=7)), torch.as_tensor(rng.dirichlet(np.ones(9)))
    full = poisson_nll(x, cell[:, None] * gene * rate)
    # equal up to where the 1e-8 guarding log(0) sits (on the rate, not on N * rate)
    torch.testing.assert_close(poisson_nll_factored(x, rate, cell, gene), full, rtol=1e-6, atol=0)
    # a cell without spliced counts (factor 0; the environment fit keeps such cells) stays finite
    u = torch.ones(2, 9, dtype=torch.double)
    assert torch.isfinite(poisson_nll_factored(u, rate[:2], torch.tensor([0.0, 3.0], dtype=torch.double), gene)).all()


def test_unspliced_rate_follows_the_kinetics() -> None:
    module = VicdyfModule(VicdyfConfig(n_genes=5)).double()
    with torch.no_grad():
        module.raw_beta.copy_(torch.linspace(-1, 1, 5))
        module.raw_gamma.copy_(torch.linspace(1, -2, 5))
    s_rate, ds_dt = torch.rand(3, 5, dtype=torch.double) + 0.5, torch.rand(3, 5, dtype=torch.double) - 0.5
    expected = torch.nn.functional.softplus((ds_dt + module.gamma * s_rate) / module.beta, beta=100.0)
    torch.testing.assert_close(module.unspliced_rate(s_rate, ds_dt), expected)


def test_size_factor_matrix_has_the_mean_of_the_counts() -> None:
    adata = toy()
    data = CountTensors.from_arrays(adata.layers["spliced"], adata.layers["unspliced"])
    n = data.cell_factor[:, None] * data.gene_factor[None, :]
    assert float(n.mean()) == pytest.approx(float(data.spliced.mean()), rel=1e-5)


@pytest.mark.parametrize("diffusion", ["posterior", "learnt"])
def test_phase_one_leaves_dynamics_untouched(diffusion: str) -> None:
    adata = toy()
    model = VICDYF(adata, diffusion=diffusion)
    before = {k: v.clone() for k, v in model.module.dynamics.state_dict().items()}
    kinetic = [p.detach().clone() for p in model.module.kinetic_parameters()]
    beta = model.module.raw_beta.detach().clone()
    model.train(TrainingPlan(**{**FAST, "epochs_phase2": 0}))
    assert all(torch.equal(before[k], v) for k, v in model.module.dynamics.state_dict().items())
    assert all(torch.equal(a, b.detach()) for a, b in zip(kinetic, model.module.kinetic_parameters()))
    assert torch.equal(beta, model.module.raw_beta.detach())
    assert set(model.history["phase"]) == {1}


def test_nan_loss_restores_the_last_good_state(monkeypatch) -> None:
    adata = toy()
    model = VICDYF(adata)
    real_loss = model.module.loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        parts = real_loss(*args, **kwargs)
        if calls["n"] > 7:  # two epochs of 2 batches train fine, then NaN
            parts["total"] = parts["total"] * float("nan")
        return parts

    monkeypatch.setattr(model.module, "loss", flaky)
    model.train(TrainingPlan(**{**FAST, "epochs_phase1": 10}))
    assert len(model.history) < 10
    assert all(torch.isfinite(p).all() for p in model.module.parameters())
    assert np.isfinite(model.history["train_total"]).all()


def test_early_stopping_on_heldout_loss(monkeypatch) -> None:
    adata = toy()
    model = VICDYF(adata)
    scores = iter([5.0, 4.0] + [4.5] * 100)
    monkeypatch.setattr(train_mod, "heldout_loss", lambda *a, **k: next(scores))
    model.train(TrainingPlan(**{**FAST, "epochs_phase1": 50, "epochs_phase2": 0, "patience": 3}))
    assert len(model.history) == 5  # best at epoch 2, then three epochs without improvement


def test_outputs_use_the_original_keys(fitted) -> None:
    model, adata = fitted
    for key in OUTPUT_KEYS["layers"]:
        assert adata.layers[key].shape == adata.shape
    for key in OUTPUT_KEYS["obs"]:
        assert np.isfinite(adata.obs[key]).all()
    for key in ("X_vicdyf_z", "X_vicdyf_zl", "X_vicdyf_d", "X_vicdyf_dl"):
        assert adata.obsm[key].shape == (adata.n_obs, 10)
    assert (adata.layers["vicdyf_fluctuation"] >= 0).all()
    np.testing.assert_allclose(adata.obs["vicdyf_fluctuation"], adata.layers["vicdyf_fluctuation"].mean(1), rtol=1e-5)
    assert json.loads(adata.uns["vicdyf"]["keys"]) == OUTPUT_KEYS


def test_save_and_load_round_trip(fitted, tmp_path) -> None:
    model, adata = fitted
    model.save(tmp_path / "model")
    with pytest.raises(CellfateError, match="exists"):
        model.save(tmp_path / "model")
    loaded = VICDYF.load(tmp_path / "model", adata)
    a, b = model.posterior(n_samples=4, seed=3), loaded.posterior(n_samples=4, seed=3)
    for key in ("X_vicdyf_zl", "vicdyf_mean_velocity", "vicdyf_fluctuation"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-7)
    assert loaded.config == model.config and len(loaded.history) == len(model.history)


def test_learnt_diffusion_saves_and_loads(tmp_path) -> None:
    adata = toy()
    model = VICDYF(adata, diffusion="learnt")
    model.train(TrainingPlan(**FAST))
    model.save(tmp_path / "model")
    loaded = VICDYF.load(tmp_path / "model", adata)
    assert loaded.config.diffusion == "learnt"
    a, b = model.posterior(n_samples=4, seed=3), loaded.posterior(n_samples=4, seed=3)
    np.testing.assert_allclose(a["vicdyf_fluctuation"], b["vicdyf_fluctuation"], rtol=1e-5, atol=1e-7)


def test_loading_onto_other_genes_is_an_error(fitted, tmp_path) -> None:
    model, adata = fitted
    model.save(tmp_path / "model")
    with pytest.raises(CellfateError, match="genes differ"):
        VICDYF.load(tmp_path / "model", adata[:, 1:].copy())
    with pytest.raises(CellfateError, match="different order"):
        VICDYF.load(tmp_path / "model", adata[:, ::-1].copy())


def test_velocity_arrows_use_a_knn_graph() -> None:
    rng = np.random.default_rng(0)
    z = np.cumsum(np.ones((50, 3)) * 0.1, axis=0) + rng.normal(0, 0.01, (50, 3))
    embedding = z[:, :2] * 10
    d = np.tile([1.0, 1.0, 1.0], (50, 1))  # every cell moves along the line
    neighbors = knn_indices(z, 8)
    assert neighbors.shape == (50, 8)
    arrows = project_velocity(z, d, embedding, neighbors=neighbors)
    inner = arrows[10:40]
    assert (inner @ np.array([1.0, 1.0]) > 0).all()  # arrows point forward on the embedding


@pytest.mark.parametrize("change, message", [
    (lambda a: a.layers.__setitem__("spliced", a.layers["spliced"] + 0.5), "non-integer"),
    (lambda a: a.layers.__delitem__("unspliced"), "no layer 'unspliced'"),
    (lambda a: a.layers.__setitem__("unspliced", -a.layers["unspliced"]), "negative"),
    (lambda a: a.layers.__setitem__("spliced", np.where(np.arange(12) == 2, 0, a.layers["spliced"])), "no spliced counts"),
])
def test_bad_layers(change, message) -> None:
    adata = toy()
    change(adata)
    with pytest.raises(CellfateError, match=message):
        VICDYF(adata)


def test_non_positive_starting_beta_is_an_error() -> None:
    with pytest.raises(CellfateError, match="beta_init must be a positive"):
        VICDYF(toy(), beta_init=0.0)
    with pytest.raises(CellfateError, match="beta_init must be a positive"):
        VICDYF(toy(), beta_init=-0.3)


def test_too_few_cells() -> None:
    with pytest.raises(CellfateError, match="only 10 cells"):
        VICDYF(toy(n_cells=10))
    with pytest.raises(CellfateError, match="cells have counts"):
        select_genes(toy(n_cells=10), min_shared_counts=0)


def _smoke(adata: ad.AnnData) -> None:
    adata = select_genes(adata, min_shared_counts=10, n_top_genes=300)
    assert 50 <= adata.n_vars <= 300 and adata.n_obs == 50
    model = VICDYF(adata)
    model.train(TrainingPlan(**FAST))
    model.annotate(adata, n_samples=4, embed=False)
    assert np.isfinite(adata.layers["vicdyf_mean_velocity"]).all()
    assert adata.obs["vicdyf_fluctuation"].gt(0).all()


def test_real_pancreas_file_loads_and_fits() -> None:
    """Real scVelo pancreas counts (shipped slice): real gene names, sparse float32 layers."""
    adata = ad.read_h5ad(DATA)
    assert "Pdx1" in adata.var_names and {"spliced", "unspliced"} <= set(adata.layers)
    assert all(sp.issparse(adata.layers[k]) and adata.layers[k].dtype == np.float32 for k in ("spliced", "unspliced"))
    _smoke(adata)


@pytest.mark.skipif(not SHARED.exists(), reason="shared/fixtures is not beside this checkout")
def test_full_real_pancreas_file() -> None:
    _smoke(ad.read_h5ad(SHARED))


def test_streamed_output_file_equals_the_in_memory_annotation(tmp_path) -> None:
    """write_annotated (layers to disk batch by batch, as the workflow rule does) gives the same keys
    and values as annotate in memory; 1,100 cells make three posterior batches, the last partial."""
    from cellfate.dynamics.outfile import write_annotated

    adata = toy(n_cells=1100, n_genes=40, seed=2)
    adata.X = adata.layers["spliced"]
    model = VICDYF(adata)
    model.train(TrainingPlan(**{**FAST, "batch_size": 256}))
    memory = model.annotate(adata.copy(), n_samples=4, seed=5, n_neighbors=10)
    kept = write_annotated(model, adata.copy(), tmp_path / "out.h5ad", n_samples=4, seed=5, n_neighbors=10)
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    assert set(back.layers) == set(memory.layers) and not set(OUTPUT_KEYS["layers"]) & set(kept.layers)
    for key in memory.layers:
        assert back.layers[key].dtype == memory.layers[key].dtype
        np.testing.assert_allclose(back.layers[key], memory.layers[key], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(back.X, memory.X)
    assert set(back.obsm) == set(memory.obsm) and set(back.uns) == set(memory.uns)
    for key in memory.obsm:
        np.testing.assert_allclose(back.obsm[key], memory.obsm[key], rtol=1e-6, atol=1e-9)
    for frame in ("obs", "var"):
        pd.testing.assert_frame_equal(getattr(back, frame), getattr(memory, frame), check_exact=False, rtol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5ad"]  # no scratch file left


def test_streamed_output_file_is_atomic(tmp_path, monkeypatch) -> None:
    """A failure in the middle of the layers leaves neither the output nor the scratch file."""
    from cellfate.dynamics.outfile import write_annotated

    adata = toy(n_cells=1100, n_genes=40, seed=2)
    model = VICDYF(adata)
    model.train(TrainingPlan(**FAST))
    batches = model.posterior_batches

    def failing(*args, **kwargs):
        for i, batch in enumerate(batches(*args, **kwargs)):
            if i == 1:
                raise OSError("disk full")
            yield batch

    monkeypatch.setattr(model, "posterior_batches", failing)
    with pytest.raises(OSError, match="disk full"):
        write_annotated(model, adata, tmp_path / "out.h5ad", n_samples=4, seed=5, n_neighbors=10)
    assert list(tmp_path.iterdir()) == []


def test_selection_in_blocks_and_moved_matrices_equal_the_whole_copy() -> None:
    """select_genes reads the counts in row/gene blocks and, with consume=True, moves the matrices:
    the genes, cells and counts are those of whole-matrix blocks and of a plain copy."""
    from cellfate.dynamics import preprocess

    adata = toy(n_cells=90, n_genes=40, seed=3)
    adata.layers["spliced"][:4] = 0  # four cells leave
    adata.layers["spliced"] = sp.csr_matrix(adata.layers["spliced"])
    adata.X = adata.layers["unspliced"].copy()
    spliced = adata.layers["spliced"]
    whole = preprocess.dispersion_rank(spliced, chunk=10**6, gene_block=10**6)
    np.testing.assert_array_equal(preprocess.dispersion_rank(spliced, chunk=7, gene_block=3), whole)
    assert not np.array_equal(whole, np.arange(40))
    copy = select_genes(adata, min_shared_counts=5, n_top_genes=15)
    moved_from = adata.copy()
    moved = select_genes(moved_from, min_shared_counts=5, n_top_genes=15, consume=True)
    assert copy.shape == moved.shape == (86, 15) and list(copy.var_names) == list(moved.var_names)
    assert moved_from.X is None and not moved_from.layers and adata.X is not None  # the plain copy keeps its input
    for key in ("spliced", "unspliced"):
        np.testing.assert_array_equal(copy.layers[key], moved.layers[key])
    np.testing.assert_array_equal(copy.X, moved.X)
    np.testing.assert_array_equal(moved.X, moved.layers["unspliced"])


def test_heldout_loss_in_blocks_equals_one_pass() -> None:
    """The held-out loss scored in blocks of cells, weighted by cells, is the one-pass per-cell mean."""
    adata = toy(n_cells=200, n_genes=12, seed=4)
    model = VICDYF(adata)
    model.train(TrainingPlan(**FAST))
    model.data.log_spliced = torch.log1p(model.data.spliced)  # released after training
    holdout = model.data.take(torch.arange(150))
    for phase in (1, 2):
        whole = train_mod.heldout_loss(model.module, holdout, phase, batch=10**6)
        assert train_mod.heldout_loss(model.module, holdout, phase, batch=7) == pytest.approx(whole, rel=1e-5)
        assert whole != pytest.approx(train_mod.heldout_loss(model.module, model.data.take(torch.arange(7)), phase))
