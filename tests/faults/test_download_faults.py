"""Fault injection through the Snakemake interface: a local server on 127.0.0.1 drops, stalls,
changes files (with ETags), truncates announcing the short size, serves HTML with status 200,
answers 429 with Retry-After, and serves a dataset with duplicated barcodes.

Each case checks what the issue asks of a fault: a recoverable one ends byte-exact with its
manifest; a fatal one exits non-zero with one error line naming the file and the problem, no
traceback, no output, no manifest entry, nothing partial left.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fault_workflow import DATASET, SAMPLE, listing, rdata_bytes, run_targets, write_config
from http_fixture import FileServer

pytestmark = pytest.mark.slow

RDATA = f"downloads/panglaodb/{SAMPLE}.RData"
COUNTS_PATH = f"/panglaodb/{SAMPLE}.sparse.RData"


@pytest.fixture()
def served(tmp_path: Path):
    root = tmp_path / "srv"
    (root / "panglaodb").mkdir(parents=True)
    (root / "panglaodb" / f"{SAMPLE}.sparse.RData").write_bytes(rdata_bytes(1))
    (root / "panglaodb" / f"{SAMPLE}.seurat_clusters.txt").write_text("AAAC-1 0\nAAAG-1 1\n")
    with FileServer(root) as server:
        yield server


def _manifest(tmp_path: Path) -> Path:
    return tmp_path / "results" / "manifests" / "panglaodb" / f"{SAMPLE}.RData.json"


def _assert_failed_cleanly(run, tmp_path: Path, problem: str) -> None:
    assert run.returncode != 0
    assert "Traceback" not in run.output + run.log, (run.output + run.log)[-3000:]
    errors = run.error_lines()
    assert len(errors) == 1 and f"PanglaoDB {SAMPLE}" in errors[0] and problem in errors[0], errors
    assert not (tmp_path / "results" / RDATA).exists() and not _manifest(tmp_path).exists()


def test_429_drops_and_a_stall_are_retried_to_a_byte_exact_file(served, tmp_path) -> None:
    served.faults[COUNTS_PATH] = ["429:2", "drop:100000", "slow:3", "drop:50000"]
    run = run_targets(tmp_path, write_config(tmp_path, served.url, retries=4, timeout_s=1), RDATA)
    assert run.returncode == 0, run.output[-3000:]
    data = (served.root / COUNTS_PATH.lstrip("/")).read_bytes()
    assert (tmp_path / "results" / RDATA).read_bytes() == data
    assert json.loads(_manifest(tmp_path).read_text())["sha256"] == hashlib.sha256(data).hexdigest()
    mine = [(r, t) for (p, r), t in zip(served.requests, served.times) if p == COUNTS_PATH]
    assert mine[1][1] - mine[0][1] >= 1.9  # Retry-After: 2 was waited for (the first backoff is 0.1 s)
    assert mine[1][0] is None and mine[2][0] is not None  # the drop was resumed with Range, not restarted


def test_a_file_changed_between_runs_is_fetched_whole_not_glued(served, tmp_path) -> None:
    config = write_config(tmp_path, served.url, retries=0)
    served.faults[COUNTS_PATH] = ["drop:150000"]
    first = run_targets(tmp_path, config, RDATA)
    _assert_failed_cleanly(first, tmp_path, "failed after 1 attempts")
    new = rdata_bytes(2, size=250_000)
    (served.root / COUNTS_PATH.lstrip("/")).write_bytes(new)
    second = run_targets(tmp_path, config, RDATA)
    assert second.returncode == 0, second.output[-3000:]
    assert (tmp_path / "results" / RDATA).read_bytes() == new
    asked = [v for (p, _), v in zip(served.requests, served.if_range) if p == COUNTS_PATH]
    assert asked[-1] is not None  # the resume was asked with the old version's ETag and refused
    assert json.loads(_manifest(tmp_path).read_text())["sha256"] == hashlib.sha256(new).hexdigest()


def test_html_page_is_refused_then_the_real_file_accepted(served, tmp_path) -> None:
    config = write_config(tmp_path, served.url)
    served.faults[COUNTS_PATH] = ["html"]
    _assert_failed_cleanly(run_targets(tmp_path, config, RDATA), tmp_path, "not an RData file: an HTML")
    assert not list((tmp_path / "results" / "downloads" / "panglaodb").glob("*.part*"))
    again = run_targets(tmp_path, config, RDATA)  # nothing of the HTML page was pinned
    assert again.returncode == 0 and _manifest(tmp_path).exists(), again.output[-3000:]


def test_truncating_server_announcing_the_short_size_is_refused(served, tmp_path) -> None:
    served.faults[COUNTS_PATH] = ["short:200000"]
    run = run_targets(tmp_path, write_config(tmp_path, served.url), RDATA)
    _assert_failed_cleanly(run, tmp_path, "truncated or corrupt")
    assert not list((tmp_path / "results" / "downloads" / "panglaodb").glob("*.part*"))


def test_duplicated_barcodes_in_a_downloaded_dataset_fail_the_read_job(tmp_path) -> None:
    from cellfate.simulate import source_formats
    from cellfate.simulate.corpus import corpus_model, simulate_sample

    root = tmp_path / "srv"
    (root / "curation" / "v1").mkdir(parents=True)
    cells = simulate_sample(corpus_model(["T cell", "B cell"], 200, seed=0), "X", ["T cell", "B cell"], 40, seed=0)
    cells.obs_names = [*cells.obs_names[:-1], cells.obs_names[0]]
    source_formats.write_cellxgene_dataset(cells, DATASET, "spleen", root / f"{DATASET}.h5ad")
    with FileServer(root) as server:
        (root / "curation" / "v1" / "datasets").write_text(listing(server.url))
        run = run_targets(tmp_path, write_config(tmp_path, server.url), f"harmonised/cellxgene/{DATASET}.h5ad")
    assert run.returncode != 0
    assert "Traceback" not in run.output + run.log
    errors = run.error_lines()
    assert len(errors) == 1 and f"{DATASET}.h5ad: cell barcode" in errors[0] and "appears more than once" in errors[0]
    assert (tmp_path / "results" / "downloads" / "cellxgene" / f"{DATASET}.h5ad").exists()  # the download was fine
    assert not list((tmp_path / "results" / "harmonised").rglob("*.h5ad"))
