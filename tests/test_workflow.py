"""The workflow itself: lint-clean, formatted, and a complete DAG for both configs."""

from __future__ import annotations

import re

import pytest

from conftest import BIN, REPO, run_snakemake

import subprocess


def test_lint_is_clean() -> None:
    result = run_snakemake("--lint", "--nolock")
    assert result.returncode == 0, result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_snakefmt_formatted() -> None:
    result = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "rules/"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_demo_dag_is_complete(tmp_path) -> None:
    result = run_snakemake("-n", "--nolock", "--config", f"results={tmp_path}/results")
    assert result.returncode == 0, result.stderr
    jobs = _job_counts(result.stdout)
    assert jobs["simulate_panglaodb_sample"] == 2
    for rule in ("simulate_expression_atlas_experiment", "simulate_cellxgene_dataset", "simulate_bifurcation",
                 "simulate_tissue", "figure_simulated_corpus", "figure_simulated_bifurcation", "figure_simulated_tissue",
                 "download_expression_atlas", "download_cellxgene_listing", "download_cellxgene_dataset",
                 "corpus_summary", "figure_qc_metrics", "figure_corpus_summary"):
        assert jobs[rule] == 1, rule
    assert jobs["download_panglaodb_counts"] == jobs["read_panglaodb"] == 2
    assert jobs["qc_sample"] == 5  # every sample of every source, and the cross-species human sample
    # gene medians come from the mouse corpus and the lineage cells (simulate.lineage_corpus_cells)
    assert jobs["simulate_lineage_corpus"] == 1 and jobs["tokenize_sketch"] == 5
    assert jobs["tokenize_median_values"] == 5 and jobs["tokenize_median_bins"] == 1  # exact medians: pass 2
    assert jobs["tokenize_sample"] == 5 and jobs["tokenize_cross_species"] == 1
    for rule in ("tokenize_medians", "tokenize_dictionary", "pretrain", "figure_pretrain_curve", "classify_cells",
                 "embed_cells", "perturb_screen", "cross_species", "velocyto_count", "vicdyf_fit", "vicdyf_fluctuation",
                 "vicdyf_validate", "deepcolor", "colocalization", "pair_clusters", "ligand_activity",
                 "spatial_validation"):
        assert jobs[rule] == 1, rule
    # the environment analysis on its positive and its negative control tissue
    assert jobs["simulate_environment"] == jobs["deepcolor_environment"] == jobs["environment_dynamics"] == 2
    # the forward analysis on the positive tissue, its table and both figures
    for rule in ("forward_analysis", "figure_forward_shifts", "figure_forward_decomposition"):
        assert jobs[rule] == 1, rule
    # the two seeds together: VICDYF's fluctuation drivers perturbed in the foundation model
    assert jobs["fluctuation_perturbation"] == jobs["figure_fluctuation_perturbation"] == 1


def test_paper_dag_builds() -> None:
    result = run_snakemake("-n", "--nolock", "--configfile", "config/paper.yaml")
    assert result.returncode == 0, result.stderr
    assert "simulate_" not in result.stdout  # the paper run simulates nothing
    jobs = _job_counts(result.stdout)
    assert jobs["download_panglaodb_counts"] == jobs["qc_sample"] == jobs["tokenize_sample"] == 1061  # PanglaoDB's mouse samples
    # every stage of the mission, from inputs that download rules fetch (URLs need not answer for a dry run)
    stages = {
        "intake": ("download_gene_synonyms", "read_panglaodb", "corpus_summary"),
        "tokenize": ("tokenize_dictionary", "tokenize_sample"),
        "pretrain": ("pretrain", "pretrain_card"),
        "foundation": ("classify_cells", "embed_cells", "perturb_screen"),
        "velocity": ("download_file", "velocity_anndata"),
        "dynamics": ("vicdyf_fit", "vicdyf_fluctuation", "figure_vicdyf_velocity"),
        "spatial": ("download_archive", "spatial_input", "deepcolor", "colocalization", "pair_clusters"),
    }
    missing = {stage: [r for r in rules if r not in jobs] for stage, rules in stages.items()}
    assert not any(missing.values()), missing
    assert "velocyto_count" not in jobs  # the pancreas file already holds spliced/unspliced counts


@pytest.mark.parametrize("profile", ["profiles/local", "profiles/slurm"])
def test_profiles_parse(profile: str, tmp_path) -> None:
    args = ["-n", "--nolock", "--profile", profile, "--config", f"results={tmp_path}/results"]
    result = run_snakemake(*args)
    assert result.returncode == 0, result.stderr
