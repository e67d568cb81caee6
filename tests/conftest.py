"""Shared test helpers: the repository root and the workflow's command-line tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_snakemake(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the snakemake CLI of this environment; output is returned, never raised on."""
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
