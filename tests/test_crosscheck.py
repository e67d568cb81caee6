"""The two simulators VICDYF was not designed on, and VICDYF's velocity on the third-party one.

Multi-seed numbers (fluctuation localisation included) are benchmarks/vicdyf_simulators_bench.py's;
here: the truth each simulator reports is what it claims, one fit on markovmodus with the
original's diffusion, and one with the learnt diffusion (with and without a branch).
"""

from __future__ import annotations

import numpy as np
import pytest

from cellfate.dynamics import crosscheck, pipeline
from cellfate.errors import CellfateError
from cellfate.simulate.cascade import CascadeSpec, simulate_cascade

pytest.importorskip("markovmodus")
from cellfate.simulate.markov import MarkovSpec, simulate_markov  # noqa: E402


def _factor(adata, name: str) -> np.ndarray:
    return np.asarray(adata.layers["spliced"][:, list(adata.var_names).index(name)], dtype=float)


def test_cascade_branches_by_a_toggle_and_its_control_does_not() -> None:
    branching = simulate_cascade(CascadeSpec(n_cells=600, n_genes=80, seed=1))
    fates = branching.obs["fate"].value_counts(normalize=True)
    assert fates.min() > 0.25, fates.to_dict()  # noise decides: both fates, neither dominant
    assert 0.2 < branching.uns["simulation"]["branch_time"] < 0.8
    late = branching.obs["pseudotime"].to_numpy() > 0.8
    x, y = _factor(branching, "F_X")[late], _factor(branching, "F_Y")[late]
    winner_x = (branching.obs["fate"] == "X").to_numpy()[late]
    assert x[winner_x].mean() > 2 * x[~winner_x].mean() and y[~winner_x].mean() > 2 * y[winner_x].mean()
    assert set(branching.var["fate_driver"]) == {"", "X", "Y"}
    control = simulate_cascade(CascadeSpec(n_cells=600, n_genes=80, seed=1, branching=False))
    late = control.obs["pseudotime"].to_numpy() > 0.8
    assert np.corrcoef(_factor(control, "F_X")[late], _factor(control, "F_Y")[late])[0, 1] > -0.1  # no exclusion
    assert (control.var["fate_driver"] == "").all()


def test_markovmodus_truth_follows_the_state_graph() -> None:
    adata = simulate_markov(MarkovSpec(n_cells=400, n_genes=160, seed=0))
    obs = adata.obs
    assert adata.uns["simulation"]["branch_time"] == 0.5
    trunk = (obs["branch"] == "progenitor").to_numpy()
    assert obs["pseudotime"][trunk].max() <= 0.5 <= obs["pseudotime"][~trunk].min()
    assert {"A", "C"} <= set(obs["branch"][~trunk])
    # cells in the first state of arm A switch A's markers on: their true ds/dt is positive there
    first_a = (obs["state"] == 3).to_numpy()
    drivers = (adata.var["fate_driver"] == "A").to_numpy()
    assert first_a.sum() > 5 and drivers.sum() > 5
    assert adata.layers["true_velocity"][np.ix_(first_a, drivers)].mean() > 0
    assert adata.layers["true_velocity"][np.ix_(first_a, (adata.var["fate_driver"] == "C").to_numpy())].mean() <= 0


@pytest.fixture(scope="module")
def markov_fit():
    return crosscheck.fit("markovmodus", 0, n_cells=800, n_genes=150, epochs=150)


def test_vicdyf_velocity_holds_on_markovmodus(markov_fit) -> None:
    from cellfate.dynamics.validation import velocity_cosine

    truth, adata, _, _ = markov_fit
    est = adata.layers["vicdyf_mean_velocity"] * adata.var["vicdyf_gene_scale"].to_numpy()[None, :]
    assert np.nanmean(velocity_cosine(est, truth.layers["true_velocity"])) >= 0.4


def test_fluctuation_on_markovmodus_is_the_decoder_gain_not_a_learnt_diffusion(markov_fit) -> None:
    """Why the fluctuation does not peak at markovmodus' branch (benchmarks/README.md): the learnt
    diffusion stays at its prior along the whole trajectory, and the per-cell fluctuation follows
    the decoder's Jacobian norm. A change that makes the diffusion learn should fail this test and
    revisit the localisation targets."""
    import torch

    from cellfate.dynamics.validation import binned_mean

    truth, adata, model, _ = markov_fit
    diffusion = np.linalg.norm(adata.obsm["X_vicdyf_diffusion"], axis=1) / model.config.d_scale
    binned = binned_mean(diffusion, truth.obs["pseudotime"].to_numpy())
    assert binned.max() / binned.min() < 1.1, binned.to_dict()
    z = torch.as_tensor(adata.obsm["X_vicdyf_zl"])
    with torch.no_grad():
        jac = torch.func.vmap(torch.func.jacrev(model.module.decoder))(z)
    gain = jac.norm(dim=(1, 2)).numpy()
    assert np.corrcoef(gain, adata.obs["vicdyf_fluctuation"])[0, 1] > 0.5


@pytest.fixture(scope="module")
def markov_learnt():
    """The benchmark's size and settings (1,000 cells x 200 genes, 150 + 150 epochs), seed 0."""
    return {kind: crosscheck.fit(kind, 0, diffusion="learnt") for kind in ("markovmodus", "markovmodus_linear")}


def _decoded_fluctuation(model, adata, diffusion) -> np.ndarray:
    """Gene-mean SD of dec(z + d) - dec(z) over 10 draws of d with this per-axis diffusion."""
    import torch

    z = torch.as_tensor(adata.obsm["X_vicdyf_zl"])
    with torch.no_grad():
        drift, _ = model.module.dynamics_posterior(z)
        noise = torch.randn((10, *drift.shape), generator=torch.Generator().manual_seed(0))
        moved = model.module.decoder(z + model.config.d_scale * (drift + diffusion * noise))
        return (moved - model.module.decoder(z)).std(0).mean(1).numpy()


def test_learnt_diffusion_localises_the_fluctuation_at_markovmodus_branch(markov_learnt) -> None:
    """diffusion="learnt" (benchmarks/README.md: 4 of 5 seeds localised, 1 of 5 no-branch controls):
    the per-cell fluctuation peaks in [branch, branch + 0.15] at >= 1.3x the rest; the velocity
    holds; the same model without a branch does not localise; and the localisation comes from the
    learnt shape of the diffusion, not from the decoder alone (the same norm spread evenly over the
    latent axes does not localise)."""
    import torch

    from cellfate.dynamics.validation import fluctuation_localisation, localisation, velocity_cosine

    for kind, expect in (("markovmodus", True), ("markovmodus_linear", False)):
        truth, adata, model, _ = markov_learnt[kind]
        est = adata.layers["vicdyf_mean_velocity"] * adata.var["vicdyf_gene_scale"].to_numpy()[None, :]
        assert np.nanmean(velocity_cosine(est, truth.layers["true_velocity"])) >= 0.4
        pseudotime = truth.obs["pseudotime"].to_numpy()
        raw = fluctuation_localisation(adata, pseudotime, 0.5, window=crosscheck.WINDOW)["raw"]
        assert (raw["peak_in_window"] and raw["ratio"] >= crosscheck.MIN_RATIO) == expect, (kind, raw)
    truth, adata, model, _ = markov_learnt["markovmodus"]
    with torch.no_grad():
        diffusion = model.module.dynamics_posterior(torch.as_tensor(adata.obsm["X_vicdyf_zl"]))[1]
    even = diffusion.pow(2).mean(1, keepdim=True).sqrt().expand_as(diffusion)
    pseudotime = truth.obs["pseudotime"].to_numpy()
    learnt = localisation(_decoded_fluctuation(model, adata, diffusion), pseudotime, 0.5)
    spread_evenly = localisation(_decoded_fluctuation(model, adata, even), pseudotime, 0.5)
    assert learnt["ratio"] >= crosscheck.MIN_RATIO and learnt["ratio"] > spread_evenly["ratio"] + 0.1, (learnt, spread_evenly)


def test_crosscheck_refuses_unknown_settings(tmp_path) -> None:
    with pytest.raises(CellfateError, match="unknown simulator 'dyngen'"):
        crosscheck.simulate("dyngen", 100, 50, 0)
    with pytest.raises(CellfateError, match="unknown dynamics.crosscheck setting"):
        pipeline.crosscheck(tmp_path / "x.tsv", {"crosscheck": {"cells": 10}})
    assert not (tmp_path / "x.tsv").exists()
