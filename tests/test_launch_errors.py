"""A training error ends in one line, not in torchrun's ChildFailedError traceback; one CPU
process is started without torchrun at all."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from cellfate.foundation import launch


def _bad_args(tmp_path: Path) -> list[str]:
    return launch.train_arguments(
        token_dictionary=str(tmp_path / "missing.pkl"), model_config=str(tmp_path / "m.yaml"),
        shards=[str(tmp_path / "s")], output_model=str(tmp_path / "model"), checkpoint_dir=str(tmp_path / "ck"),
        history=str(tmp_path / "h.tsv"), heldout=str(tmp_path / "ho.tsv"), device="cpu",
    )


@pytest.mark.parametrize("gpus", [0, 2])  # 2: torchrun with two (CPU) workers, as on a 2-GPU node
def test_training_error_is_one_line_without_launcher_traceback(tmp_path: Path, gpus: int) -> None:
    command = launch.pretrain_command(gpus, 1, _bad_args(tmp_path))
    assert ("torchrun" in command) == (gpus > 1)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **_pythonpath()})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "ERROR [rank" in line or line.startswith("error:")]
    assert all("missing.pkl: token dictionary not found" in line for line in errors if "[rank" in line)
    assert len([e for e in errors if "[rank" in e]) == max(gpus, 1)
    if gpus > 1:
        # torchrun may end the slower worker with SIGTERM once the other has failed: both are reported
        assert re.fullmatch(r"error: pretraining failed: 2 worker\(s\) stopped \(rank 0 (exit 1|stopped by signal 15), "
                            r"rank 1 (exit 1|stopped by signal 15)\); each worker's own error line is above",
                            errors[-1]), errors[-1]
        assert "exit 1" in errors[-1]
    assert not (tmp_path / "model").exists()


def _pythonpath() -> dict[str, str]:
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def test_failure_line_names_a_worker_the_launcher_stopped() -> None:
    class Failure:
        def __init__(self, exitcode: int) -> None:
            self.exitcode = exitcode

    line = launch.failure_line({1: Failure(-15), 0: Failure(1)})
    assert line.startswith("pretraining failed: 2 worker(s) stopped (rank 0 exit 1, rank 1 stopped by signal 15)")
