"""The environment simulator's driver sub-population (``EnvironmentSpec.driver_subpopulation``):
only that sub-population's density sets the lineage's fate and pace, its cells are marked in the
reference and express their own markers, and the default tissue has none of it."""

from __future__ import annotations

import numpy as np
import pytest

from cellfate.simulate.environment import EnvironmentSpec, Intervention, pace, simulate_environment

SMALL = dict(grid=(10, 10), n_reference_partner_cells=300, n_reference_lineage_cells=200, n_genes=80,
             n_dynamic_genes=40, seed=1)


def _standardised_log(x: np.ndarray) -> np.ndarray:
    x = np.log(np.asarray(x, dtype=float))
    return (x - x.mean()) / x.std()


def test_default_tissue_has_no_sub_population() -> None:
    spots, ref, _ = simulate_environment(EnvironmentSpec(**SMALL))
    assert "driver_subpopulation" not in ref.obs and "subpopulation_density" not in spots.obs
    assert "driver_subpopulation" not in spots.uns["environment_truth"]
    # the fate follows the driver type's own density
    expected = 1 / (1 + np.exp(-3.0 * _standardised_log(spots.obs["driver_density"])))
    assert np.allclose(spots.obs["true_p_alpha"], expected)


def test_only_the_sub_population_drives_the_fate() -> None:
    spec = EnvironmentSpec(driver_subpopulation=0.3, **SMALL)
    spots, ref, _ = simulate_environment(spec)
    sub_z = _standardised_log(spots.obs["subpopulation_density"])
    # fate and pace are functions of the sub-population's density, not of the whole type's
    assert np.allclose(spots.obs["true_p_alpha"], 1 / (1 + np.exp(-3.0 * sub_z)))
    whole = _standardised_log(spots.obs["driver_density"])
    assert abs(np.corrcoef(whole, sub_z)[0, 1]) < 0.9
    lineage = ref.obs[ref.obs["is_lineage"]]
    home = spots.obs_names.get_indexer(lineage["home_spot"])
    assert np.allclose(lineage["speed"], pace(spec, sub_z[home]))
    # the sub-population is some of the driver's cells only, with its own markers
    sub = ref.obs["driver_subpopulation"].to_numpy()
    fib = (ref.obs["cell_type"] == "fibroblast").to_numpy()
    assert sub.any() and not (sub & ~fib).any() and (fib & ~sub).any()
    markers = ref[:, ref.uns["environment_truth"]["subpopulation_genes"]].X.toarray()
    assert markers[sub].mean() > 5 * markers[fib & ~sub].mean()
    assert (spots.obs["true_subpopulation_cells"] <= spots.obsm["true_abundance"][:, 0]).all()
    assert spots.obs["true_subpopulation_cells"].sum() > 0


def test_sub_population_rejects_what_it_does_not_simulate() -> None:
    with pytest.raises(ValueError, match="driver_subpopulation"):
        simulate_environment(EnvironmentSpec(driver_subpopulation=1.0, **SMALL))
    with pytest.raises(ValueError, match="sub-population"):
        simulate_environment(EnvironmentSpec(driver_subpopulation=0.3, **SMALL), Intervention("remove", "fibroblast"))
