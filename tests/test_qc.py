"""QC on simulated samples finds exactly the planted defects, and says why each cell failed."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellfate.corpus.qc import QCThresholds, apply_qc, qc_table
from cellfate.errors import CellfateError
from cellfate.simulate.corpus import add_duplicates, corpus_model, simulate_sample

TYPES = ["T cell", "B cell", "macrophage", "hepatocyte", "endothelial cell", "fibroblast"]


@pytest.fixture(scope="module")
def model():
    return corpus_model(TYPES, 2000, seed=0)


def _harmonised_like(adata):
    adata.obs["is_primary_data"] = adata.obs["sim_duplicate_of"] == ""
    adata.obs["source"], adata.obs["sample"] = "sim", adata.uns["sample_id"]
    return adata


def test_qc_catches_every_planted_defect_and_keeps_good_cells(model) -> None:
    adata = simulate_sample(model, "A", TYPES, 1500, seed=4)
    donor = simulate_sample(model, "B", TYPES, 200, seed=4)
    adata = _harmonised_like(add_duplicates(adata, donor, 50, "B", seed=4))
    apply_qc(adata, QCThresholds())
    truth = adata.obs["sim_quality"].astype(str).to_numpy()
    dup = (adata.obs["sim_duplicate_of"] != "").to_numpy()
    passed = adata.obs["filter_pass"].to_numpy()
    assert not passed[truth != "ok"].any()
    assert not passed[dup].any() and (adata.obs["qc_fail"][dup] == "duplicate").all()
    assert passed[(truth == "ok") & ~dup].mean() > 0.99
    # Damaged cells are caught by the mitochondrial check; the first failed check is named, so a
    # damaged cell that is also small (seed 4: one cell, 190 genes) reports min_genes instead.
    damaged = (truth == "damaged") & ~dup
    assert (adata.obs["pct_mito"][damaged] > QCThresholds().max_pct_mito).all()
    first = adata.obs["qc_fail"][damaged]
    assert set(first) <= {"max_pct_mito", "min_genes", "min_counts"} and (first == "max_pct_mito").mean() > 0.9
    row = qc_table(adata).iloc[0]
    assert row["cells"] == adata.n_obs and row["cells_pass"] == passed.sum() and row["fail_duplicate"] == 50


def test_thresholds_come_from_the_config(model) -> None:
    adata = _harmonised_like(simulate_sample(model, "C", TYPES, 300, seed=1))
    strict = apply_qc(adata.copy(), QCThresholds(min_counts=3000)).obs["filter_pass"].sum()
    loose = apply_qc(adata.copy(), QCThresholds(min_counts=100)).obs["filter_pass"].sum()
    assert strict < 0.7 * loose


def test_sample_with_too_few_good_cells_is_an_error_naming_the_file(model) -> None:
    adata = _harmonised_like(simulate_sample(model, "D", TYPES, 40, seed=2))
    with pytest.raises(CellfateError, match=r"s.h5ad: only \d+ of 40 cells pass QC"):
        apply_qc(adata, QCThresholds(min_counts=100_000), path="s.h5ad")


def test_mad_outliers_are_flagged_within_a_sample(model) -> None:
    adata = _harmonised_like(simulate_sample(model, "E", TYPES, 400, seed=3))
    scale = np.ones(adata.n_obs, dtype=np.int32)
    scale[0] = 40  # a doublet-like giant
    adata.X = sp.csr_matrix(sp.diags(scale) @ adata.X)
    apply_qc(adata, QCThresholds(nmads=4))
    assert adata.obs["qc_fail"].iloc[0] == "mad_outlier"
    assert np.mean(adata.obs["qc_fail"] == "mad_outlier") < 0.05
