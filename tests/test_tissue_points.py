"""The held-out point-process tissue (cellfate.simulate.tissue_points): its truth and its layout."""

from __future__ import annotations

import numpy as np
import pytest

from cellfate.simulate.tissue_points import PointTissueSpec, fate_and_pace, simulate_point_tissue


@pytest.fixture(scope="module")
def tissues():
    positive = simulate_point_tissue(PointTissueSpec(seed=1))
    negative = simulate_point_tissue(PointTissueSpec(seed=1, fate_gain=0.0, speed_gain=0.0))
    return positive, negative


def _alpha_by_driver_count(reference) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Alpha share of the lineage cells in the top and bottom thirds of the driver's count."""
    lin = reference.obs["is_lineage"].to_numpy()
    driver = str(reference.uns["environment_truth"]["driver"])
    count = reference.obsm["true_partner_density"][driver].to_numpy()[lin]
    alpha = reference.obs["fate"].to_numpy()[lin] == "alpha"
    low, high = np.quantile(count, [1 / 3, 2 / 3])
    return alpha[count >= high].mean(), alpha[count <= low].mean(), count, reference.obs["speed"].to_numpy()[lin]


def test_the_drivers_local_count_sets_fate_and_pace_only_in_the_positive_control(tissues):
    (_, pos, _), (_, neg, _) = tissues
    high, low, count, speed = _alpha_by_driver_count(pos)
    assert high - low > 0.5
    assert np.corrcoef(count, speed)[0, 1] > 0.6
    high, low, _, speed = _alpha_by_driver_count(neg)
    assert abs(high - low) < 0.15
    assert np.allclose(speed, 1.0)


def test_fate_is_logistic_in_the_count_and_pace_saturates():
    spec = PointTissueSpec()
    tissue = np.arange(0, 41, dtype=float)
    p, speed = fate_and_pace(spec, np.array([0.0, 20.0, 1000.0]), tissue)
    assert p[0] < 0.05 and abs(p[1] - 0.5) < 1e-9 and p[2] > 0.999
    assert speed[0] == pytest.approx(spec.speed_min) and speed[2] == pytest.approx(spec.speed_max, rel=1e-3)


def test_the_same_tissue_in_both_controls_and_the_chains_keys(tissues):
    (spots, ref, table), (spots_neg, ref_neg, _) = tissues
    assert np.array_equal(spots.obsm["spatial"], spots_neg.obsm["spatial"])
    assert np.array_equal(ref.obsm["true_position"], ref_neg.obsm["true_position"])
    truth = ref.uns["environment_truth"]
    for key in ("driver", "driver_ligand", "partners", "niche_genes", "fate_share"):
        assert key in truth and key in spots.uns["environment_truth"]
    assert set(ref.obs["cell_type"].cat.categories) == {*truth["partners"], "progenitor", "alpha", "beta"}
    lin = ref.obs["is_lineage"].to_numpy()
    assert ref.layers["spliced"][lin].sum() > 0 and ref.layers["spliced"][~lin].sum() == 0
    assert ref.layers["unspliced"][lin].sum() > 0
    assert set(ref.obs.loc[lin, "home_spot"]) <= set(spots.obs_names)
    assert list(spots.var_names) == list(ref.var_names)
    # spots sum the cells inside them: their true abundance is the cell count
    assert np.array_equal(spots.obsm["true_abundance"].sum(1), spots.obs["n_cells_true"].to_numpy())
    alpha = ref.var.loc[ref.var_names.str.startswith("lin_"), "symbol"][lambda s: s.str.contains("Alpha")]
    assert table.loc[alpha, truth["driver_ligand"]].min() >= 0.6
    assert truth["driver_ligand"] in set(ref.var["symbol"])
