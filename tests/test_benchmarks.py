"""Every benchmark script starts (``--help``) and none divides by a reference figure typed into it.

A benchmark measures its baseline in the same run, on the same machine, and prints the ratio
(issue #14 item 8): a rate copied from another machine type (the old ``1,150 cells/s``) makes a
ratio that says nothing. Targets (``TARGET_*``: what a ratio must reach) are not baselines.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO

BENCHES = sorted(p.name for p in (REPO / "benchmarks").glob("*.py"))
BASELINE_WORDS = ("REFERENCE", "BASELINE", "ORIGINAL", "PER_S", "PER_SECOND", "RATE", "THROUGHPUT")


def hard_coded_rates(source: str) -> list[str]:
    """Module-level numbers whose name says they are a baseline's measured figure."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                name = getattr(target, "id", "")
                is_number = isinstance(node.value.value, int | float) and not isinstance(node.value.value, bool)
                if is_number and not name.startswith("TARGET") and any(w in name.upper() for w in BASELINE_WORDS):
                    found.append(f"{name} = {node.value.value}")
    return found


@pytest.mark.parametrize("bench", BENCHES)
def test_no_hard_coded_baseline_rate(bench: str) -> None:
    assert not hard_coded_rates((REPO / "benchmarks" / bench).read_text()), bench


def test_the_rate_check_can_fail() -> None:
    assert hard_coded_rates("REFERENCE_CELLS_PER_S = 1150\nTARGET_RATIO = 10.0\n") == ["REFERENCE_CELLS_PER_S = 1150"]


@pytest.mark.parametrize("bench", BENCHES)
def test_help_runs(bench: str) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "benchmarks" / bench), "--help"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
