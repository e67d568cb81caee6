"""Partial reruns on the finished demo: only the stage asked for and what depends on it runs.

Each case is a dry run against the demo's results, reading the jobs Snakemake would run."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import yaml

from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow


def _planned(demo_results: Path, *args: str) -> dict[str, int]:
    run = run_snakemake("-n", "--nolock", "--config", f"results={demo_results}", *args)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    text = run.stdout + run.stderr
    if "Job stats:" not in text:
        return {}
    table = text.split("Job stats:")[1].split("Reasons:")[0]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}
    jobs.pop("total", None)
    return jobs


def _n_qc_samples(demo_results: Path) -> int:
    """QC'd samples of the demo: the corpus's and the cross-species human sample."""
    return len(list((demo_results / "qc").glob("*/*.h5ad")))


def test_finished_demo_has_nothing_to_do(demo_results: Path) -> None:
    assert _planned(demo_results) == {}


def test_forcerun_of_qc_reruns_qc_and_downstream_only(demo_results: Path) -> None:
    jobs = _planned(demo_results, "--forcerun", "qc_sample")
    assert jobs["qc_sample"] == _n_qc_samples(demo_results) and jobs["corpus_summary"] == 1 and jobs["figure_qc_metrics"] == 1
    assert not any(rule.startswith(("simulate_", "download_", "read_")) for rule in jobs)


def test_changed_qc_threshold_reruns_qc_and_downstream_only(demo_results: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["qc"]["max_pct_mito"] = 15
    changed = tmp_path / "config.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = _planned(demo_results, "--configfile", str(changed))
    assert jobs["qc_sample"] == _n_qc_samples(demo_results) and jobs["corpus_summary"] == 1
    assert not any(rule.startswith(("simulate_", "download_", "read_")) for rule in jobs)


def test_deleted_result_reruns_its_job_only(demo_results: Path, tmp_path: Path) -> None:
    # (a missing intermediate file whose downstream results are current triggers nothing)
    target = demo_results / "figures" / "qc_metrics.png"
    kept = tmp_path / "kept.png"
    target.rename(kept)
    try:
        jobs = _planned(demo_results)
    finally:
        kept.rename(target)
    assert jobs == {"figure_qc_metrics": 1, "all": 1}


def test_changed_simulation_part_reruns_only_its_simulator(demo_results: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["simulate"]["tissue"]["n_reference_cells"] += 10
    changed = tmp_path / "config.yaml"
    changed.write_text(yaml.safe_dump(config, sort_keys=True))  # another key order changes nothing
    jobs = _planned(demo_results, "--configfile", str(changed))
    assert jobs.get("simulate_tissue") == 1
    assert not any(rule.startswith(("simulate_panglaodb", "simulate_bifurcation", "simulate_environment", "qc_",
                                    "download_", "tokenize_", "pretrain", "vicdyf_")) for rule in jobs), jobs


def test_deleted_shard_retokenizes_that_sample_only(demo_results: Path, tmp_path: Path) -> None:
    shard = sorted(p for p in (demo_results / "tokenize" / "shards").glob("*/*") if p.is_dir())[0]
    kept = tmp_path / "kept"
    shard.rename(kept)
    try:
        jobs = _planned(demo_results)
    finally:
        kept.rename(shard)
    assert jobs["tokenize_sample"] == 1, jobs
    assert not any(rule.startswith(("simulate_", "download_", "read_", "qc_", "tokenize_sketch", "tokenize_median",
                                    "tokenize_dictionary", "velocyto", "vicdyf_", "deepcolor")) for rule in jobs), jobs


def test_until_stops_at_the_named_rule(demo_results: Path) -> None:
    jobs = _planned(demo_results, "--forceall", "--until", "qc_sample")
    assert jobs["qc_sample"] == _n_qc_samples(demo_results)
    assert "corpus_summary" not in jobs and not any(rule.startswith("figure_qc") for rule in jobs)


def test_every_figure_is_a_real_picture(demo_results: Path) -> None:
    figures = sorted((demo_results / "figures").glob("*.png"))
    assert len(figures) >= 5
    for png in figures:
        image = mpimg.imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 200, png.name
        gray = image[..., :3].mean(axis=-1)
        assert (gray < 0.9).mean() > 0.01, f"{png.name} is blank"  # more than 1% inked pixels
        assert np.unique(np.round(gray, 2)).size > 20, f"{png.name} has almost no content"


def test_changed_analysis_setting_keeps_the_fitted_models(demo_results: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dynamics"]["top_fraction"] = 0.3  # the fluctuation analysis, not the VICDYF fit
    config["spatial"]["ligands"]["n_top_targets"] = 10  # ligand activity, not the DeepCOLOR map
    changed = tmp_path / "config.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = _planned(demo_results, "--configfile", str(changed))
    assert jobs["vicdyf_fluctuation"] == 1 and jobs["ligand_activity"] == 1, jobs
    assert not any(rule in jobs for rule in ("vicdyf_fit", "deepcolor", "colocalization", "pair_clusters")), jobs


def test_until_tokenize_stops_before_pretraining(demo_results: Path) -> None:
    jobs = _planned(demo_results, "--forceall", "--until", "tokenize_sample")
    assert jobs["tokenize_sample"] == 5 and jobs["tokenize_medians"] == 1 and jobs["qc_sample"] >= 4  # + lineage
    assert not any(rule.startswith(("pretrain", "figure_", "classify", "vicdyf", "deepcolor")) for rule in jobs), jobs
