"""Workflow scripts: a user error is one line on stderr and in the log, exit status 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import types
from cellfate.errors import CellfateError
from cellfate.workflow import run
snakemake = types.SimpleNamespace(log=[{log!r}])
def work():
    raise {error}
run(snakemake, work)
"""
USER_ERROR = 'CellfateError("checksum mismatch for SRA1\\n(the bad file was deleted)", "results/downloads/x.RData")'


def _run(tmp_path: Path, error: str) -> subprocess.CompletedProcess:
    script = SCRIPT.format(log=str(tmp_path / "job.log"), error=error)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


def test_user_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = _run(tmp_path, USER_ERROR)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # the message's own newline was folded too
    assert "results/downloads/x.RData: checksum mismatch for SRA1 (the bad file was deleted)" in lines[0]
    assert "checksum mismatch" in (tmp_path / "job.log").read_text()


def test_bugs_keep_their_traceback(tmp_path: Path) -> None:
    result = _run(tmp_path, 'KeyError("oops")')
    assert result.returncode == 1 and "Traceback" in result.stderr and "KeyError: 'oops'" in result.stderr


THREADS = """
import types
from cellfate.workflow import run
snakemake = types.SimpleNamespace(log=[], threads=1)
def work():
    import torch  # imported inside the job, after run() set things up
    print("threads", torch.get_num_threads())
run(snakemake, work)
"""


def test_run_holds_torch_to_the_rules_threads_even_when_imported_later() -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    result = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "threads 1" in result.stdout


def test_no_workflow_script_sets_threads_itself() -> None:
    scripts = Path(__file__).resolve().parents[1] / "workflow_scripts"
    assert not [p.name for p in scripts.glob("*.py") if "set_num_threads" in p.read_text()]
