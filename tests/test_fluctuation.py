"""VICDYF on the simulated bifurcation: validation against the truth, and the fluctuation analysis.

One fit of the demo's differentiation (config/config.yaml's simulate.bifurcation and the demo's
training settings); the thresholds are cellfate.dynamics.validation.THRESHOLDS, the same the
workflow's validation table reports.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cellfate.dynamics import fluctuation as fl
from cellfate.dynamics import pipeline
from cellfate.dynamics.model import VICDYF
from cellfate.dynamics.preprocess import select_genes
from cellfate.dynamics.train import TrainingPlan
from cellfate.dynamics.validation import THRESHOLDS, validate
from cellfate.errors import CellfateError
from cellfate.simulate.bifurcation import BifurcationSpec, simulate_bifurcation

DEMO_TRAINING = dict(epochs_phase1=200, epochs_phase2=200, patience=50, seed=42, progress=False)


@pytest.fixture(scope="module")
def fit():
    torch.set_num_threads(1)  # the demo rule's setting, and reproducible
    truth = simulate_bifurcation(BifurcationSpec(n_cells=600, n_genes=100, branch_time=0.4, seed=0))
    adata = select_genes(truth, min_shared_counts=20)
    model = VICDYF(adata)
    model.train(TrainingPlan(**DEMO_TRAINING))
    model.annotate(adata, n_samples=10, seed=42, embed=False)
    genes, clusters = fl.analyse(model, adata, fate_key="branch", fates=["alpha", "beta"], top_fraction=0.2, seed=42)
    metrics, ranks, cos = validate(adata, truth, genes)
    return {"truth": truth, "adata": adata, "model": model, "genes": genes, "clusters": clusters,
            "metrics": metrics.set_index("metric"), "ranks": ranks, "cos": cos}


def _check(fit, metric: str) -> float:
    value = fit["metrics"].loc[metric, "value"]
    op, threshold = THRESHOLDS[metric]
    assert (value >= threshold) if op == ">=" else (value <= threshold), f"{metric} = {value:.3f}, needs {op} {threshold}"
    return value


def test_velocity_agrees_with_the_true_velocity(fit) -> None:
    _check(fit, "velocity_cosine_mean")
    _check(fit, "velocity_cosine_moving_mean")
    assert len(fit["cos"]) == fit["adata"].n_obs


def test_fluctuation_is_highest_just_past_the_branch_point(fit) -> None:
    _check(fit, "fluctuation_branch_ratio")
    _check(fit, "fluctuation_peak_offset")


def test_fate_drivers_rank_near_the_top_toward_their_fate(fit) -> None:
    _check(fit, "driver_median_rank_fraction")
    ranks = fit["ranks"]
    assert set(ranks["fate"]) == {"alpha", "beta"}
    n_genes = fit["adata"].n_vars
    for fate, table in ranks.groupby("fate"):
        assert table["rank"].min() <= 5, (fate, table.to_dict("records"))  # a driver among the top five
        assert table["rank"].median() <= 0.3 * n_genes, (fate, table.to_dict("records"))


def test_top_cells_and_their_clusters(fit) -> None:
    clusters, adata = fit["clusters"], fit["adata"]
    assert len(clusters) == round(0.2 * adata.n_obs)
    fluct = adata.obs["vicdyf_fluctuation"]
    assert clusters["vicdyf_fluctuation"].min() >= fluct.quantile(0.79)
    assert clusters["cluster"].nunique() >= 2
    used = {f for names in clusters["nearest_to_fate"] for f in str(names).split(",") if f and f != "nan"}
    assert used == {"alpha", "beta"}


def test_gene_table(fit) -> None:
    genes, adata = fit["genes"], fit["adata"]
    assert list(genes.columns) == ["fate", "rank", "gene_id", "symbol", "contribution", "cluster", "n_cells"]
    for fate, table in genes.groupby("fate"):
        assert sorted(table["gene_id"]) == sorted(adata.var_names)
        assert (np.diff(table["contribution"].to_numpy()) <= 0).all()
        assert list(table["rank"]) == list(range(1, adata.n_vars + 1))


def test_contribution_direction_is_the_regression_of_d_on_the_fate_axis() -> None:
    rng = np.random.default_rng(0)
    zl, diffusion, centroid = rng.normal(size=(5, 4)), rng.uniform(0.1, 1, (5, 4)), np.zeros(4)
    w = fl.contribution_directions(zl, diffusion, centroid)
    for i in range(5):  # Monte Carlo: E[d | e'd = sd] for d ~ N(0, diag(diffusion^2))
        e = -zl[i] / np.linalg.norm(zl[i])
        d = rng.normal(size=(200_000, 4)) * diffusion[i]
        proj = d @ e
        slope = (d * proj[:, None]).mean(0) / proj.var() * proj.std()
        np.testing.assert_allclose(w[i], slope, atol=0.02)


def test_missing_or_unknown_fate_annotation(fit) -> None:
    with pytest.raises(CellfateError, match="no fate annotation column 'cell_type'"):
        fl.analyse(fit["model"], fit["adata"], fate_key="cell_type", fates=["alpha"])
    with pytest.raises(CellfateError, match="no cell is annotated 'delta'"):
        fl.analyse(fit["model"], fit["adata"], fate_key="branch", fates=["delta"])


def test_unknown_config_key() -> None:
    with pytest.raises(CellfateError, match="unknown dynamics setting"):
        pipeline.settings({"epochs": 5})


def test_truth_must_match_the_fit(fit) -> None:
    with pytest.raises(CellfateError, match="truth does not match"):
        validate(fit["adata"], fit["truth"][:, 5:].copy(), fit["genes"])
    assert isinstance(fit["metrics"], pd.DataFrame)
