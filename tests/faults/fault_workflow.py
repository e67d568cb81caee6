"""Drive the workflow's download and read rules through the Snakemake CLI against a fault server.

A run uses the shipped config with ``simulate: null``, one-sample sheets of each source written to
a temporary folder, and URL templates pointing at :class:`http_fixture.FileServer` on 127.0.0.1;
the downloader's retries and backoff are small so that every fault costs seconds, not minutes.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest and http_fixture

from conftest import REPO, run_snakemake  # noqa: E402

SAMPLE = "SRA1_SRS1"
DATASET = "0f0f0f0f-1111-2222-3333-444444444444"


def rdata_bytes(seed: int, size: int = 300_000) -> bytes:
    """A file with R's save() framing (gzip of 'RDX2' + body): what the content check accepts."""
    return gzip.compress(b"RDX2\n" + os.urandom(size) + bytes([seed]), mtime=0)


@dataclass
class Run:
    returncode: int
    output: str
    log: str

    def error_lines(self) -> list[str]:
        """cellfate's one-line errors: the job's ``ERROR`` records and Snakemake-time ``error:``s."""
        return [line for line in self.output.splitlines() if " cellfate ERROR " in line or line.startswith("error:")]


def write_config(tmp: Path, server_url: str, *, retries: int = 2, timeout_s: float = 5) -> Path:
    """Config and sheets for one sample per source, its URLs on the fault server."""
    sheets = tmp / "sheets"
    sheets.mkdir(exist_ok=True)
    (sheets / "panglaodb.tsv").write_text(f"sample_id\tsra\tsrs\ttissue\n{SAMPLE}\tSRA1\tSRS1\tliver\n")
    (sheets / "expression_atlas.tsv").write_text("sample_id\taccession\ttissue\nE-MTAB-1\tE-MTAB-1\tlung\n")
    (sheets / "cellxgene.tsv").write_text(f"sample_id\tdataset_id\ttissue\n{DATASET}\t{DATASET}\tspleen\n")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["simulate"] = None
    config["results"] = str(tmp / "results")
    config["samples"] = {s: str(sheets / f"{s}.tsv") for s in ("panglaodb", "expression_atlas", "cellxgene")}
    config["download"].update(retries=retries, timeout_s=timeout_s, backoff_s=0.1, job_retries=0)
    base = server_url
    config["download"]["urls"] = {
        "panglaodb_counts": base + "/panglaodb/{sra}_{srs}.sparse.RData",
        "panglaodb_clusters": base + "/panglaodb/{sra}_{srs}.seurat_clusters.txt",
        "panglaodb_annotations": base + "/panglaodb/cell_type_annotations.txt",
        "expression_atlas_counts": base + "/atlas/{accession}-quantification-raw-files.zip",
        "expression_atlas_design": base + "/atlas/ExpDesign-{accession}.tsv",
        "cellxgene_listing": base + "/curation/v1/datasets",
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_targets(tmp: Path, config: Path, *targets: str, timeout: int = 120) -> Run:
    """Snakemake on ``targets`` (relative to the results folder); its output and the job logs."""
    results = tmp / "results"
    result = run_snakemake(*[str(results / t) for t in targets], "--cores", "1", "--nolock", "--configfile", str(config),
                           timeout=timeout)
    logs = "\n".join(p.read_text() for p in sorted((results / "logs").rglob("*.log"))) if (results / "logs").exists() else ""
    return Run(result.returncode, result.stdout + result.stderr, logs)


def listing(server_url: str) -> str:
    return json.dumps([{"dataset_id": DATASET, "organism": [{"label": "Mus musculus"}],
                        "assets": [{"filetype": "H5AD", "url": f"{server_url}/{DATASET}.h5ad"}]}])
