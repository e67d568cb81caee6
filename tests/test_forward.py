"""Forward analysis: integration, interventions, intervals and the decomposition on dynamics whose
answer is known (an oracle SDE), the simulator under interventions, and the rule end to end."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from cellfate.errors import CellfateError
from cellfate.simulate.environment import (EnvironmentSpec, Intervention, simulate_environment, spec_from_config,
                                           true_fate_share)
from cellfate.spatial import forward as fw
from cellfate.spatial import forward_pipeline as fp
from cellfate.spatial.validation import forward_rows


class OracleSDE:
    """Latent (x, y, w): x advances at unit speed; past x = 1, y is pushed away from 0 (the branch)
    and, when the cell is niche-sensitive (w > 0), toward the sign of its first condition column.
    Column 2 acts on nothing. Fate alpha is y > 0 at the end, beta y < 0."""

    config = SimpleNamespace(d_scale=1.0)

    def __init__(self, gain: float = 3.0, noise: float = 0.35, axes: tuple = (0.0, 1.0, 0.0)) -> None:
        self.gain, self.noise, self.axes = gain, noise, torch.tensor(axes)

    def dynamics_posterior(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, w = z[:, 0], z[:, 1], z[:, 2]
        past = torch.sigmoid((x - 1.0) * 8.0)
        sensitive = (w > 0).float()
        dy = past * (1.5 * y + sensitive * self.gain * c[:, 0])
        drift = torch.stack([torch.ones_like(x) * (x < 3.0), dy, torch.zeros_like(x)], dim=1)
        return drift, torch.full_like(z, self.noise) * self.axes

    def drift(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.dynamics_posterior(z, c)[0]


def _lineage(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Data cells along the oracle's trajectories: the trunk, then the two arms."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 3, n)
    arm = rng.choice([-1.0, 1.0], n)
    y = np.where(x < 1, 0.0, arm * (x - 1)) + rng.normal(0, 0.05, n)
    w = rng.choice([-1.0, 1.0], n)
    labels = np.where(x < 1, "progenitor", np.where(arm > 0, "alpha", "beta"))
    return np.c_[x, y, w], labels


def _setup(n_prog: int = 60, seed: int = 0):
    z, labels = _lineage(seed=seed)
    terminals = fw.terminal_states(z, labels, ["progenitor"], ["alpha", "beta"], seed=seed)
    rng = np.random.default_rng(seed + 1)
    z0 = np.c_[rng.uniform(0, 0.3, n_prog), np.zeros(n_prog), np.ones(n_prog)]
    raw = np.c_[rng.normal(0, 1, n_prog), rng.normal(0, 1, n_prog)]
    cond = fw.Condition(raw, ["fibroblast", "macrophage"], ["fibroblast", "macrophage"], "ln")
    return OracleSDE(), z, labels, terminals, z0, cond


def _shares(model, z0, c_std, terminals, seed=0, n_paths=40):
    out, absorbed = fw.integrate(model, torch.as_tensor(z0, dtype=torch.float32), torch.as_tensor(c_std, dtype=torch.float32),
                                 terminals, dt=0.05, n_steps=120, n_paths=n_paths, seed=seed)
    return out, absorbed


def test_oracle_fates_follow_the_condition_and_interventions_move_them() -> None:
    model, z, labels, terminals, z0, cond = _setup()
    base, absorbed = _shares(model, z0, cond.standardised(), terminals)
    assert absorbed.mean() > 0.9
    p_alpha = fw.fate_probabilities(base, 2)[:, 0]
    assert np.corrcoef(p_alpha, cond.raw[:, 0])[0, 1] > 0.7  # the niche decides
    removed, _ = _shares(model, z0, cond.standardised(fw.intervene(cond, cond.raw, {"kind": "remove", "partner": "fibroblast"})), terminals)
    doubled, _ = _shares(model, z0, cond.standardised(fw.intervene(cond, cond.raw, {"kind": "scale", "partner": "fibroblast", "factor": 2.0})), terminals)
    null, _ = _shares(model, z0, cond.standardised(fw.intervene(cond, cond.raw, {"kind": "remove", "partner": "macrophage"})), terminals)
    alpha = lambda out: fw.fate_probabilities(out, 2)[None, :, 0]  # noqa: E731  (1 fit x cells)
    shift, low, high = fw.shift_interval(alpha(base), alpha(removed))
    assert shift < -0.2 and high < 0  # fibroblast gone: alpha falls, and the interval says so
    shift, low, high = fw.shift_interval(alpha(base), alpha(doubled))
    assert shift > 0.05 and low > 0
    shift, low, high = fw.shift_interval(alpha(base), alpha(null))
    assert low <= 0 <= high and shift == 0  # common random numbers: no effect, no shift at all


def test_graph_readout_follows_the_condition_and_stays_on_the_cells() -> None:
    _, z, labels, terminals, _, _ = _setup()
    model = OracleSDE(axes=(1.0, 1.0, 1.0))  # VICDYF's diffusion has no noiseless axis
    starts = np.flatnonzero((labels == "progenitor") & (z[:, 2] > 0) & (z[:, 0] < 0.5))  # niche-sensitive
    rng = np.random.default_rng(3)
    raw = np.c_[rng.normal(0, 1, len(starts)), rng.normal(0, 1, len(starts))]
    cond = fw.Condition(raw, ["fibroblast", "macrophage"], ["fibroblast", "macrophage"], "ln")
    graph = fw.state_graph(model, z, np.zeros((len(z), 2)), n_neighbours=10)
    assert np.array_equal(np.sort(graph.rows), np.sort(graph.cols))  # every edge both ways

    def share(spec: dict | None) -> np.ndarray:
        c = cond.standardised(cond.raw if spec is None else fw.intervene(cond, cond.raw, spec))
        return fw.graph_fates(model, z, terminals, graph, starts, c)

    base = share(None)
    assert np.allclose(base.sum(1), 1.0)  # every walk ends in a fate: no horizon, no unabsorbed paths
    assert np.corrcoef(base[:, 0], raw[:, 0])[0, 1] > 0.7  # the niche decides
    removed = share({"kind": "remove", "partner": "fibroblast"})
    assert removed[:, 0].mean() < base[:, 0].mean() - 0.2
    assert share({"kind": "scale", "partner": "fibroblast", "factor": 2.0})[:, 0].mean() > base[:, 0].mean() + 0.05
    assert np.allclose(share({"kind": "remove", "partner": "macrophage"}), base)  # a column that acts on nothing


def test_absorption_is_the_exact_hitting_probability() -> None:
    graph = fw.StateGraph(np.array([1, 1, 2, 2]), np.array([0, 2, 1, 3]), 1.0)  # a path 0 - 1 - 2 - 3
    p = np.array([0.25, 0.75, 0.5, 0.5])  # from 1: to 0 a quarter; from 2: either way
    b = fw.absorption(graph, p, np.array([0, -1, -1, 1]), 2)
    # h1 = 0.25 + 0.75 h2, h2 = 0.5 h1  ->  h1 = 0.4, h2 = 0.2
    assert np.allclose(b[:, 0], [1.0, 0.4, 0.2, 0.0]) and np.allclose(b.sum(1), 1.0)
    closed = fw.StateGraph(np.array([1, 2, 2, 1]), np.array([2, 1, 1, 2]), 1.0)  # 1 and 2 only reach each other
    with pytest.raises(CellfateError, match="reach no fate region"):
        fw.absorption(closed, np.array([1.0, 0.5, 0.5, 0.0]), np.array([0, -1, -1, 1]), 2)


def test_interval_spans_the_fits_and_the_cells() -> None:
    base = np.ones((3, 40))
    treated = base.copy()
    treated[0] -= 0.25  # one fit says the fate falls by a quarter, the others say nothing
    shift, low, high = fw.shift_interval(base, treated)
    assert shift == pytest.approx(-0.25 / 3)
    # t with 2 degrees of freedom over the fits (-0.25, 0, 0): wider than their range, so it covers 0
    assert low < -0.25 and high > 0.1
    treated = base.copy()
    treated[:, :8] -= 1.0  # every fit: eight cells of forty lose the fate; the interval spans which cells
    shift, low, high = fw.shift_interval(base, treated)
    assert shift == pytest.approx(-0.2) and -0.4 < low < -0.28 and -0.12 < high < -0.05
    assert fw.shift_interval(base, base) == (0.0, 0.0, 0.0)


def test_bootstrap_interval_is_the_replicates_spread_over_their_own_cells() -> None:
    base = np.zeros((4, 4))
    treated = np.tile([0.4, 0.0, 0.0, 0.0], (4, 1))  # every fit: the first progenitor gains the fate
    weights = np.array([[2, 1, 1, 0], [0, 2, 1, 1], [1, 1, 1, 1], [1, 0, 2, 1]])  # each fit's resample
    shift, low, high = fw.shift_interval(base, treated, weights=weights)
    replicates = np.array([0.2, 0.0, 0.1, 0.1])  # the first progenitor's share of each resample, x 0.4
    assert shift == pytest.approx(0.1)  # all progenitors, every fit
    half = stats.t.ppf(0.975, 3) * replicates.std(ddof=1)  # the replicates' sd, not their mean's
    assert (low, high) == pytest.approx((0.1 - half, 0.1 + half))
    assert fw.shift_interval(base, treated, weights=np.ones((4, 4)))[1:] == pytest.approx((0.1, 0.1))


def test_bootstrap_fits_train_on_resampled_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(fp.env, "fit_conditioned_dynamics", lambda s, u, c, cfg, progress: seen.append(s[:, 0]))
    s = np.arange(50, dtype=float)[:, None] * np.ones((1, 3))
    cond = fw.Condition(np.random.default_rng(0).normal(size=(50, 2)), ["a", "b"], ["a", "b"], "ln")
    e = {"n_latent": 2, "n_hidden": 8, "epochs_vae": 1, "epochs_dynamics": 1, "batch_size": 8, "lr": 1e-3,
         "patience": 1}
    fits = fp.fit_models(s, s, cond, e, 2, 0)
    rows = [r for _, r in fits]
    assert all(np.array_equal(seen[k], rows[k]) for k in range(2)) and not np.array_equal(rows[0], rows[1])
    assert len(np.unique(rows[0])) < 50  # drawn with replacement
    assert [r for _, r in fp.fit_models(s, s, cond, e, 2, 0, "none")] == [None, None]
    assert np.array_equal(seen[-1], s[:, 0])


def test_decomposition_separates_niche_choosers_from_random_choosers() -> None:
    model, z, labels, terminals, z0, cond = _setup(n_prog=80)
    z0[:, 2] = np.where(np.arange(len(z0)) % 2 == 0, 1.0, -1.0)  # half choose by niche, half at random
    parts = fw.decompose(model, z0, cond.standardised(), terminals, dt=0.05, n_steps=120, n_paths=20, n_conditions=8)
    niche = z0[:, 2] > 0
    assert roc_auc_score(niche, parts["environmental_share"]) >= 0.8
    assert parts.loc[~niche, "intrinsic_entropy"].mean() > parts.loc[niche, "intrinsic_entropy"].mean()


def test_graph_decomposition_runs_every_progenitor_under_every_environment() -> None:
    _, z, labels, terminals, _, _ = _setup()
    model = OracleSDE(axes=(1.0, 1.0, 1.0))
    starts = np.flatnonzero((labels == "progenitor") & (z[:, 0] < 0.5))  # both groups: w > 0 chooses by niche
    raw = np.random.default_rng(4).normal(0, 1, (len(starts), 2))
    cond = fw.Condition(raw, ["fibroblast", "macrophage"], ["fibroblast", "macrophage"], "ln")
    graph = fw.state_graph(model, z, np.zeros((len(z), 2)), n_neighbours=10)
    env = fw.shared_conditions(len(starts), 0)
    assert np.array_equal(env, np.arange(len(starts)))
    assert len(np.unique(fw.shared_conditions(len(starts), 5, seed=1))) == 5
    p = fw.fates_per_condition(model, z, terminals, graph, starts, cond.standardised()[env])
    assert p.shape == (len(starts), len(starts), 2)
    # column k is the read-out of every start at progenitor k's condition
    assert np.allclose(p[:, 3], fw.graph_fates(model, z, terminals, graph, starts, np.repeat(cond.standardised()[3:4],
                                                                                          len(starts), 0)))
    parts = fw.uncertainty_parts(p)
    niche = z[starts, 2] > 0
    assert roc_auc_score(niche, parts["environmental_share"]) >= 0.9
    assert parts.loc[~niche, "environmental_mi"].max() < 0.05 < parts.loc[niche, "environmental_mi"].median()


def test_interventions_on_each_scale() -> None:
    raw = np.array([[0.0, 0.2, 1.0, 0.0], [2.0, 0.4, 0.0, 1.0]])
    log2 = fw.Condition(raw[:, :2], ["fibroblast:0", "fibroblast:1"], ["fibroblast", "fibroblast"], "log2")
    assert np.allclose(fw.intervene(log2, log2.raw, {"kind": "scale", "partner": "fibroblast", "factor": 4}), raw[:, :2] + 2)
    assert np.allclose(fw.intervene(log2, log2.raw, {"kind": "remove", "partner": "fibroblast"}), [[0.0, 0.2], [0.0, 0.2]])
    blocked = fw.intervene(log2, log2.raw, {"kind": "block_ligand", "ligand": "Col1a1"}, {"Col1a1": ["fibroblast"]})
    assert np.allclose(blocked, [[0.0, 0.2], [0.0, 0.2]])
    share = fw.Condition(raw[:, :2] / 4, ["a", "b"], ["a", "b"], "share")
    assert np.allclose(fw.intervene(share, share.raw, {"kind": "scale", "partner": "a", "factor": 4})[:, 0], [0.0, 1.0])
    onehot = fw.Condition(raw[:, 2:], ["wt", "ko"], ["wt", "ko"], "onehot")
    assert np.allclose(fw.intervene(onehot, onehot.raw, {"kind": "condition", "value": "ko"}), [[0, 1], [0, 1]])
    with pytest.raises(CellfateError, match="no condition column"):
        fw.intervene(log2, log2.raw, {"name": "x", "kind": "remove", "partner": "T cell"})
    with pytest.raises(CellfateError, match="no partner sends"):
        fw.intervene(log2, log2.raw, {"name": "x", "kind": "block_ligand", "ligand": "Lyz2"}, {})


def test_settings_refuse_bad_interventions() -> None:
    with pytest.raises(CellfateError, match="unknown spatial.forward"):
        fp.forward_settings({"forward": {"paths": 3}})
    with pytest.raises(CellfateError, match="readout must be one of"):
        fp.forward_settings({"forward": {"readout": "walk"}})
    with pytest.raises(CellfateError, match="resample must be one of"):
        fp.forward_settings({"forward": {"resample": "jackknife"}})
    with pytest.raises(CellfateError, match="distinct name"):
        fp.forward_settings({"forward": {"interventions": [{"name": "a", "kind": "remove"}, {"name": "a", "kind": "remove"}]}})
    with pytest.raises(CellfateError, match="kind must be"):
        fp.forward_settings({"forward": {"interventions": [{"name": "a", "kind": "delete"}]}})


SMALL = dict(grid=(10, 10), n_reference_partner_cells=120, n_reference_lineage_cells=300, n_genes=80, n_dynamic_genes=40)


def test_simulator_under_intervention_records_the_true_shares() -> None:
    spec = EnvironmentSpec(seed=1, **SMALL)
    base = true_fate_share(spec)
    removed = Intervention("remove", "fibroblast")
    spots, ref, _ = simulate_environment(spec, removed)
    assert spots.uns["environment_truth"]["fate_share"]["alpha"] == pytest.approx(true_fate_share(spec, removed)["alpha"])
    assert true_fate_share(spec, removed)["alpha"] < base["alpha"] - 0.2  # the driver gone: few alpha
    assert true_fate_share(spec, Intervention("scale", "fibroblast", 2.0))["alpha"] > base["alpha"]
    assert true_fate_share(spec, Intervention("block_ligand", ligand="Col1a1"))["alpha"] == pytest.approx(
        true_fate_share(spec, removed)["alpha"])
    assert true_fate_share(spec, Intervention("remove", "macrophage")) == base  # not the driver
    assert spots.obsm["true_abundance"][:, 0].sum() == 0  # no fibroblast cell left
    assert ref.obs["true_p_alpha"].dropna().max() < 0.1  # every lineage cell's home lost its signal
    with pytest.raises(ValueError, match="needs a ligand"):
        Intervention("block_ligand")


@pytest.mark.parametrize("readout", ["graph", "paths"])
def test_rule_end_to_end(tmp_path, readout) -> None:
    sim = {"seed": 0, "environment": SMALL}
    _, ref, _ = simulate_environment(spec_from_config(sim))
    ref.write_h5ad(tmp_path / "ref.h5ad")
    ivs = [{"name": "fibroblast removed", "kind": "remove", "partner": "fibroblast"},
           {"name": "macrophage removed", "kind": "remove", "partner": "macrophage"}]
    cfg = {"seed": 0, "environment": {"epochs_vae": 10, "epochs_dynamics": 10},
           "forward": {"condition": "truth", "interventions": ivs, "n_fits": 2, "n_paths": 8, "n_conditions": 3,
                       "decomposition_paths": 4, "readout": readout}}
    table = fp.forward_analysis(tmp_path / "ref.h5ad", None, tmp_path / "t.tsv", tmp_path / "c.tsv", cfg, sim)
    assert list(table["intervention"]) == ["fibroblast removed"] * 2 + ["macrophage removed"] * 2
    assert (table["low"] <= table["shift"]).all() and (table["shift"] <= table["high"]).all()
    share = table["predicted_share"]
    assert (table["low"] >= -share - 1e-12).all() and (table["high"] <= 1.0 - share + 1e-12).all()
    assert table["true_shift"].iloc[0] < -0.2 and table["true_null"].iloc[2]
    cells = pd.read_csv(tmp_path / "c.tsv", sep="\t")
    prog = cells[cells["is_progenitor"]]
    assert np.allclose(prog["p_alpha"] + prog["p_beta"], 1.0)
    assert prog["environmental_share"].between(0, 1).all()
    assert set(forward_rows(table)) == {"forward_sign_ok", "forward_within_2x", "forward_null_covers_zero"}
    assert (table["absorbed"] == 1.0).all() if readout == "graph" else table["absorbed"].between(0, 1).all()
    with pytest.raises(CellfateError, match="no cell of type"):
        fp.forward_analysis(tmp_path / "ref.h5ad", None, tmp_path / "t2.tsv", tmp_path / "c2.tsv",
                            {**cfg, "forward": {**cfg["forward"], "fates": ["alpha", "delta"]}}, sim)
    assert not (tmp_path / "t2.tsv").exists()


def test_simulator_random_choosers_lack_the_receptor_and_ignore_the_niche() -> None:
    spec = EnvironmentSpec(seed=2, insensitive_share=0.5, **SMALL)
    _, ref, _ = simulate_environment(spec)
    lin = ref[ref.obs["is_lineage"].to_numpy()]
    chooser = lin.obs["niche_chooser"].to_numpy(bool)
    assert 0.35 < chooser.mean() < 0.65
    assert np.allclose(lin.obs.loc[~chooser, "true_p_alpha"], 0.5) and np.allclose(lin.obs.loc[~chooser, "speed"], 1.0)
    assert lin.obs.loc[chooser, "true_p_alpha"].std() > 0.2
    spliced = lin.layers["spliced"].toarray()
    expressed = spliced[chooser].mean(0) > 0.5
    ratio = spliced[~chooser][:, expressed].mean(0) / spliced[chooser][:, expressed].mean(0)
    assert (ratio < 0.3).sum() == spec.n_receptor_genes  # the receptor genes, and no other gene, fall
    base = true_fate_share(EnvironmentSpec(seed=2, **SMALL))["alpha"]
    assert true_fate_share(spec)["alpha"] == pytest.approx(0.5 * base + 0.25)
