"""State-blind placement: lineage cells placed by the genes the dynamics model does not read."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from cellfate.errors import CellfateError
from cellfate.simulate.environment import EnvironmentSpec, simulate_environment
from cellfate.spatial import environment as env
from cellfate.spatial import placement
from cellfate.spatial.cell_level import expression_match

PARTNERS = ["fibroblast", "macrophage", "T cell"]
SMALL = dict(grid=(12, 12), n_reference_partner_cells=150, n_reference_lineage_cells=400, n_genes=80,
             n_dynamic_genes=40)


@pytest.fixture(scope="module")
def tissue() -> dict:
    spots, ref, _ = simulate_environment(EnvironmentSpec(seed=0, **SMALL))
    labels = ref.obs["cell_type"].astype(str).to_numpy()
    lin = ref.obs["is_lineage"].to_numpy(bool)
    spliced = ref.layers["spliced"].toarray()[lin]
    return {"x": ref.X.toarray(), "spots": spots.X.toarray(), "labels": labels, "lin": lin, "spliced": spliced,
            "dynamics": spliced.sum(0) >= 10, "xy": np.asarray(spots.obsm["spatial"], dtype=float),
            "home": spots.obs_names.get_indexer(ref.obs["home_spot"].to_numpy()[lin]),
            "density": spots.obsm["true_partner_density"][PARTNERS].to_numpy(),
            "true": np.log(ref.obsm["true_partner_density"][PARTNERS].to_numpy()[lin])}


def _colocalization_and_state_r2(t: dict, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per partner: correlation of log(p @ true density) with the true density at home, and its
    R^2 from the cells' state (PCA of the dynamics genes)."""
    c = np.log(p @ t["density"])
    state = PCA(10, random_state=0).fit_transform(np.log1p(t["spliced"][:, t["dynamics"]]))
    corr = np.array([np.corrcoef(c[:, k], t["true"][:, k])[0, 1] for k in range(len(PARTNERS))])
    return corr, env.state_explains_condition(state, c)


def test_state_blind_placement_finds_homes_without_the_state(tissue: dict) -> None:
    """Placed from their non-dynamics genes (with the spots' partner part subtracted), lineage cells
    land nearer home than at random, each partner's colocalization follows its true density at home,
    and the driver's column is no function of the state; the same match on all genes makes it one
    (the placement by fate the state-blind map is there to avoid)."""
    t = tissue
    x, lin = t["x"], t["lin"]
    p = placement.state_blind_map(x[lin], x[~lin], t["labels"][~lin], PARTNERS, t["spots"], t["dynamics"], 0.1,
                                  t["xy"], 1.5)
    assert np.allclose(p.sum(1), 1.0)
    uniform = np.full_like(p, 1.0 / p.shape[1])
    near, _ = placement.mean_distance_from_home(p, t["xy"], t["home"])
    at_random, _ = placement.mean_distance_from_home(uniform, t["xy"], t["home"])
    assert near < 0.8 * at_random
    corr, r2 = _colocalization_and_state_r2(t, p)
    assert corr.min() > 0.6, corr
    assert r2[0] < 0.5, r2  # fibroblast, the driver: fates follow it
    _, r2_all = _colocalization_and_state_r2(t, expression_match(x[lin], t["spots"], 0.1))
    assert r2_all[0] > 0.8, r2_all


def test_niche_condition_predicts_each_partner_from_non_dynamics_genes(tissue: dict) -> None:
    """Each partner's log density at home, predicted from the cell's non-dynamics genes by a
    regression learnt over spots, follows that partner and not the cell's state."""
    t = tissue
    x, lin = t["x"], t["lin"]
    c = placement.niche_condition(x[lin], x[~lin], t["labels"][~lin], PARTNERS, t["spots"], t["dynamics"], t["density"])
    corr = np.array([np.corrcoef(c[:, k], t["true"][:, k])[0, 1] for k in range(len(PARTNERS))])
    assert corr.min() > 0.6, corr
    state = PCA(10, random_state=0).fit_transform(np.log1p(t["spliced"][:, t["dynamics"]]))
    assert env.state_explains_condition(state, c)[0] < 0.5


def test_state_blind_placement_needs_genes_outside_the_dynamics(tissue: dict) -> None:
    t = tissue
    x, lin = t["x"], t["lin"]
    with pytest.raises(CellfateError, match="does not read"):
        placement.state_blind_map(x[lin], x[~lin], t["labels"][~lin], PARTNERS, t["spots"],
                                  np.ones(x.shape[1], dtype=bool))


def test_environment_rule_reads_the_spots_for_a_state_blind_condition(tmp_path) -> None:
    """The rule's function places the lineage by the spots when asked, and says in one line
    when the spots are missing or the placement is unknown."""
    import pandas as pd

    from cellfate.io import write_h5ad, write_table
    from cellfate.spatial import pipeline

    spots, ref, table = simulate_environment(EnvironmentSpec(seed=1, **SMALL))
    labels = ref.obs["cell_type"].astype(str).to_numpy()
    abundance = np.asarray(spots.obsm["true_abundance"], dtype=float)[:, :len(PARTNERS)]
    p = np.full((ref.n_obs, spots.n_obs), 1.0 / spots.n_obs)
    for k, name in enumerate(PARTNERS):
        p[labels == name] = abundance[:, k] / abundance[:, k].sum()
    ref.obsm["X_zl"] = np.zeros((ref.n_obs, 2))
    write_h5ad(ref, tmp_path / "cells.h5ad")
    write_h5ad(spots, tmp_path / "spots.h5ad")
    write_table(table, tmp_path / "lt.tsv", index=True)
    np.save(tmp_path / "p_mat.npy", p.astype(np.float32))
    env_cfg = {"folds": 2, "n_permutations": 3, "epochs_vae": 2, "epochs_dynamics": 2}
    files = [tmp_path / n for n in ("cells.h5ad", "p_mat.npy", "lt.tsv", "modes.tsv", "genes.tsv", "ligands.tsv")]
    for how in ("state_blind", "niche"):
        cfg = {"environment": {**env_cfg, "placement": how}}
        pipeline.environment(*files, cfg=cfg, spots_h5ad=tmp_path / "spots.h5ad")
        modes = pd.read_csv(tmp_path / "modes.tsv", sep="\t")
        assert set(modes.loc[modes["condition"] == "colocalization", "partner"]) == set(PARTNERS)
    with pytest.raises(CellfateError, match="needs the spots"):
        pipeline.environment(*files, cfg={"environment": {**env_cfg, "placement": "niche"}})
    with pytest.raises(CellfateError, match="neither map"):
        pipeline.environment(*files, cfg={"environment": {**env_cfg, "placement": "spots"}},
                             spots_h5ad=tmp_path / "spots.h5ad")


def test_real_data_with_spliced_counts_everywhere_places_cells_once_the_dynamics_read_the_variable_genes(
        tissue: dict) -> None:
    """On real data every gene has spliced counts: all genes modelled leave nothing to place by;
    ``n_top_genes`` keeps the state's most variable genes for the dynamics and the rest place the cells."""
    from cellfate.spatial.pipeline import most_variable

    t = tissue
    x, lin = t["x"], t["lin"]
    everything = x[lin].sum(0) >= 10  # as if every expressed gene had spliced counts
    assert len(placement.placement_genes(x[lin], everything)) == 0
    dynamics = most_variable(x[lin], everything, int(t["dynamics"].sum()))
    assert dynamics.sum() == t["dynamics"].sum() and not dynamics[~everything].any()
    assert len(placement.placement_genes(x[lin], dynamics)) > 0
    p = placement.state_blind_map(x[lin], x[~lin], t["labels"][~lin], PARTNERS, t["spots"], dynamics, 0.1,
                                  t["xy"], 1.5)
    uniform = np.full_like(p, 1.0 / p.shape[1])
    near, _ = placement.mean_distance_from_home(p, t["xy"], t["home"])
    at_random, _ = placement.mean_distance_from_home(uniform, t["xy"], t["home"])
    assert near < 0.85 * at_random
    corr, r2 = _colocalization_and_state_r2(t, p)
    assert corr.min() > 0.6 and r2[0] < 0.5, (corr, r2)  # each partner followed, the driver's column not the state


def test_spot_smoothing_is_the_gaussian_kernel_without_a_dense_spots_by_spots_matrix() -> None:
    rng = np.random.default_rng(0)
    xy = np.stack(np.meshgrid(np.arange(14.0), np.arange(14.0)), -1).reshape(-1, 2) * 100.0  # pixel units
    values = rng.normal(size=(len(xy), 5))
    d2 = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2 * (1.5 * 100.0) ** 2))
    expected = kernel @ values / kernel.sum(1, keepdims=True)
    assert np.abs(placement.smooth_over_spots(values, xy, 1.5) - expected).max() < 1e-3
    assert np.array_equal(placement.smooth_over_spots(values, xy, 0.0), values)
