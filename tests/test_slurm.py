"""Cluster execution for real: the demo DAG through `--profile` (derived from profiles/slurm)
on a one-node Slurm brought up on this machine; every job, GPU rules included, goes through
sbatch, and the results equal the local run's."""

from __future__ import annotations

import filecmp
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import yaml

from conftest import REPO, comparable_outputs, run_snakemake
from slurm_cluster import LocalSlurm, unavailable_reason

pytestmark = pytest.mark.slow


def test_profile(tmp_path: Path) -> Path:
    """profiles/slurm with what a laptop-sized test cluster needs on top."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile.update({
        "jobs": 8,
        "default-resources": {**profile["default-resources"], "mem_mb": 2000, "cpus_per_task": 1, "runtime": 30},
        "slurm-status-command": "squeue",  # no slurmdbd here, so sacct cannot answer
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-logdir": str(tmp_path / "slurm_logs"),
        "slurm-keep-successful-logs": True,
        "latency-wait": 5,
    })
    folder = tmp_path / "profile"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


test_profile.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with LocalSlurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def _same(a: Path, b: Path) -> bool:
    if a.suffix == ".h5ad":
        x, y = ad.read_h5ad(a), ad.read_h5ad(b)
        dense = lambda m: m.toarray() if hasattr(m, "toarray") else np.asarray(m)  # noqa: E731
        return x.obs.equals(y.obs) and x.var.equals(y.var) and np.array_equal(dense(x.X), dense(y.X))
    return filecmp.cmp(a, b, shallow=False)


def test_demo_dag_through_slurm_equals_the_local_run(slurm: LocalSlurm, demo_results: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    run = run_snakemake("--profile", str(test_profile(tmp_path)), "--config", f"results={results}", timeout=2400,
                        env=slurm.env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    submitted = set(re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", run.stdout + run.stderr))
    completed = {job["JobId"]: job for job in slurm.completed_jobs()}
    assert submitted and submitted <= set(completed), "every submitted job must have run on the cluster"
    assert all(completed[j]["JobState"] == "COMPLETED" for j in submitted)
    log = run.stdout + run.stderr
    cluster_jobs = re.findall(r"^rule (\w+):", log, flags=re.M)  # local rules print "localrule"
    assert len(submitted) == len(cluster_jobs) > 10, (len(submitted), cluster_jobs)
    assert "download_panglaodb_counts" not in cluster_jobs  # downloads stay on the submit host
    gpu_rules = {"pretrain"} & set(cluster_jobs)
    gpu_jobs = [job for job in completed.values() if "gres/gpu" in job.get("Tres", "")]
    assert len(gpu_jobs) >= len(gpu_rules)
    local, remote = comparable_outputs(demo_results), comparable_outputs(results)
    assert set(local) == set(remote)
    different = [rel for rel in local if not _same(local[rel], remote[rel])]
    assert not different, f"outputs differ from the local run: {different}"
    assert (results / "figures" / "qc_metrics.png").stat().st_size > 10_000
