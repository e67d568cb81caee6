"""DeepCOLOR's cell-level maps on a tissue whose cells carry their home in their expression.

One seed (the multi-seed numbers are in benchmarks/deepcolor_bench.py): each cell's mapped x
follows its true x for the gradient type, the two sub-states separate, the type-level map holds;
and the original's map (z only, decoded rates) collapses every cell onto its type's mean.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellfate.simulate.tissue import CellTissueSpec, simulate_cell_tissue
from cellfate.spatial import validation
from cellfate.spatial.cell_level import cell_level_metrics, expected_position
from cellfate.spatial.model import DeepColor, DeepColorConfig, p_mat_from_map2sp, type_shares
from cellfate.spatial.train import TrainConfig

SPEC = CellTissueSpec(grid=(12, 12), n_reference_cells=800, n_genes=200, seed=1)


@pytest.fixture(scope="module")
def tissue():
    return simulate_cell_tissue(SPEC)


def fit_maps(tissue, **module_settings):
    torch.set_num_threads(1)
    spots, cells = tissue
    cfg = DeepColorConfig(**module_settings, train=TrainConfig(epochs_sc=150, epochs_map=300, batch_size=256,
                                                               lr=3e-3, seed=1))
    model = DeepColor.fit(cells, spots, cfg)
    return model.map2sp(model.map_inputs(cells))


def test_simulated_truth_is_recorded(tissue) -> None:
    spots, cells = tissue
    assert {"true_x", "true_y", "true_spot", "true_substate", "true_niche"} <= set(cells.obs)
    epi = cells.obs["cell_type"] == SPEC.substate_type
    assert set(cells.obs.loc[epi, "true_substate"]) == {0, 1}
    assert (cells.obs.loc[~epi, "true_substate"] == -1).all()
    home = spots.obsm["spatial"][cells.obs["true_spot"].to_numpy()]
    assert np.abs(home - cells.obs[["true_x", "true_y"]].to_numpy()).max() <= 0.5
    assert len(set(np.concatenate(list(cells.uns["programs"].values())))) == 4 * SPEC.program_genes


def test_each_cell_maps_to_its_own_home(tissue) -> None:
    spots, cells = tissue
    map2sp = fit_maps(tissue)
    p = p_mat_from_map2sp(map2sp)
    metrics = cell_level_metrics(p, spots.obsm["spatial"], cells.obs, SPEC.gradient_type, SPEC.substate_type)
    assert metrics["cell_x_spearman"] >= 0.6 and metrics["cell_x_spread"] >= 0.1, metrics
    assert metrics["substate_auroc"] >= 0.85, metrics
    types = list(spots.uns["cell_types"])
    corr = validation.map_correlation(type_shares(map2sp, cells.obs["cell_type"]),
                                      validation.true_fractions(spots.obsm["true_abundance"]), types)
    assert corr.mean() >= 0.88, corr


def test_original_map_collapses_to_the_type_mean(tissue) -> None:
    spots, cells = tissue
    p = p_mat_from_map2sp(fit_maps(tissue, n_expression_pcs=0, map_rate="decoded"))
    metrics = cell_level_metrics(p, spots.obsm["spatial"], cells.obs, SPEC.gradient_type, SPEC.substate_type)
    assert metrics["cell_x_spread"] < 0.05, metrics
    x = expected_position(p, spots.obsm["spatial"])[:, 0]
    fib = (cells.obs["cell_type"] == SPEC.gradient_type).to_numpy()
    assert x[fib].std() < 0.1 * cells.obs["true_x"][fib].std()
