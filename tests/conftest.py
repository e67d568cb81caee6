"""Shared test helpers: the repository root and the workflow's command-line tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_snakemake(*args: str, cwd: Path = REPO, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the snakemake CLI of this environment; output is returned, never raised on.

    A run past ``timeout`` gets SIGINT (a stuck Snakemake ignores SIGTERM), then is reported.
    """
    command = ["timeout", "-s", "INT", "-k", "30", str(timeout), str(BIN / "snakemake"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_results(tmp_path_factory) -> Path:
    """The demo DAG run once locally (2 cores) into a temporary results folder."""
    results = tmp_path_factory.mktemp("demo") / "results"
    run = run_snakemake("--profile", "profiles/local", "--cores", "2", "--config", f"results={results}", timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return results


def comparable_outputs(results: Path) -> dict[str, Path]:
    """Result files whose content must not depend on where the DAG ran (relative path -> file).

    Logs, benchmarks, figures and anything naming its own absolute path (the demo's file://
    listing, manifests) are left out; the data they describe is compared instead.
    """
    skip_dirs = {"logs", "benchmarks", "manifests", "figures", "checkpoints"}
    out = {}
    for path in results.rglob("*"):
        rel = path.relative_to(results)
        if not path.is_file() or rel.parts[0] in skip_dirs or path.name == "datasets.json" or path.suffix in {".png", ".html"}:
            continue
        out[rel.as_posix()] = path
    return out
