"""Cluster execution for real: the demo DAG from simulation to the pretrained model through
`--profile` (derived from profiles/slurm) on a one-node Slurm brought up on this machine. Every
job goes through sbatch, pretraining asks for a GPU (the node has one fake gres GPU), and the data
results equal the local run's. The later stages (model use, VICDYF, DeepCOLOR) are ordinary CPU/GPU
rules of the same kind; leaving them out keeps this test within a few minutes. Pretraining and
the embeddings ask for the node's (fake) GPU, as they do on a real cluster."""

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
        # the demo pretrains on CPU; asking for the node's GPU checks the GPU request path of
        # the profile (paper.yaml sets pretrain.gpus and the rule asks for them the same way)
        "set-resources": {**profile["set-resources"],
                          **{rule: {**profile["set-resources"][rule], "gpu": 1, "cpus_per_gpu": 1}
                             for rule in ("pretrain", "embed_cells")}},
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
    targets = [f"{results}/{t}" for t in ("figures/qc_metrics.png", "tokenize/summary.tsv", "figures/pretrain_curve.png",
                                          "foundation/embeddings.h5ad")]
    # (targets before --config: whatever follows --config is read as key=value pairs)
    run = run_snakemake(*targets, "--profile", str(test_profile(tmp_path)), "--config", f"results={results}",
                        timeout=2400, env=slurm.env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    submitted = set(re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", run.stdout + run.stderr))
    completed = {job["JobId"]: job for job in slurm.completed_jobs()}
    assert submitted and submitted <= set(completed), "every submitted job must have run on the cluster"
    assert all(completed[j]["JobState"] == "COMPLETED" for j in submitted)
    log = run.stdout + run.stderr
    cluster_jobs = re.findall(r"^rule (\w+):", log, flags=re.M)  # local rules print "localrule"
    assert len(submitted) == len(cluster_jobs) > 10, (len(submitted), cluster_jobs)
    assert "download_panglaodb_counts" not in cluster_jobs  # downloads stay on the submit host
    assert {"pretrain", "embed_cells"} <= set(cluster_jobs)
    requests = slurm.job_requests()
    gpu_jobs = sorted(requests[j].get("Comment", "?") for j in submitted
                      if "gres:gpu:1" in requests[j].get("TresPerJob", "") + requests[j].get("TresPerNode", ""))
    assert gpu_jobs == ["rule_embed_cells", "rule_pretrain"], {j: requests[j].get("TresPerJob") for j in submitted}
    assert (results / "pretrain" / "model" / "config.json").exists()
    # (the model's training history records wall times; its weights are checked by test_pretrain)
    local = comparable_outputs(demo_results)
    remote = {rel: path for rel, path in comparable_outputs(results).items()
              if not rel.startswith(("pretrain/", "foundation/"))}
    assert set(remote) <= set(local) and any(rel.startswith("tokenize/shards/") for rel in remote)
    different = [rel for rel in remote if not _same(local[rel], remote[rel])]
    assert not different, f"outputs differ from the local run: {different}"
    assert (results / "figures" / "qc_metrics.png").stat().st_size > 10_000


def test_failed_job_is_reported_with_its_logs_and_retried_with_more_memory(slurm: LocalSlurm, tmp_path: Path) -> None:
    results = tmp_path / "results"
    sample = "qc/panglaodb/SRA900001_SRS900001"
    failed_before = {job["JobId"] for job in slurm.completed_jobs() if job["JobState"] == "FAILED"}
    # more passing cells demanded than the sample has: QC fails on every attempt
    strict = tmp_path / "strict_qc.yaml"  # merged over config/config.yaml
    strict.write_text(yaml.safe_dump({"qc": {**yaml.safe_load((REPO / "config/config.yaml").read_text())["qc"],
                                             "min_cells": 100000}}))
    run = run_snakemake(f"{results}/{sample}.h5ad", "--profile", str(test_profile(tmp_path)), "--retries", "1",
                        "--configfile", str(strict), "--config", f"results={results}", timeout=900, env=slurm.env)
    log = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"{results}/logs/{sample}.log" in log  # the rule's own log, shown (show-failed-logs) ...
    assert "cells pass QC (need 100000)" in log, log[-3000:]  # ... with the one-line error in it
    assert str(tmp_path / "slurm_logs") in log  # and where Slurm's log of the job lies
    failed = [job for job in slurm.completed_jobs() if job["JobState"] == "FAILED" and job["JobId"] not in failed_before]
    memory = sorted(int(re.search(r"mem=(\d+)M", job["Tres"]).group(1)) for job in failed)
    assert memory == [4000, 8000], memory  # attempt 2 asked for twice the memory
    assert not (results / f"{sample}.h5ad").exists()
