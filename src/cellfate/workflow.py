"""The one adaptor between Snakemake's ``script:`` directive and package calls.

Every workflow script does ``run(snakemake, work)``: logging goes to the rule's ``log:`` file,
PyTorch is held to the rule's ``threads:``, a :class:`~cellfate.errors.CellfateError` becomes one
``error:`` line and exit status 1 (Snakemake then deletes the job's outputs), and anything else
keeps its traceback because it is a bug.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Callable
from typing import Any

from cellfate.errors import CellfateError

log = logging.getLogger("cellfate")


def configure_logging(log_file: str | None = None, level: int = logging.INFO) -> None:
    """Send cellfate's log records to stderr and, when given, to the rule's log file."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True)


class _SetThreadsOnImport(importlib.abc.MetaPathFinder):
    """Finds ``torch`` where the path finder would and sets its threads once it has loaded; nothing else."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "torch":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)  # where torch is installed
        if spec is None or spec.loader is None:
            return None  # let the other finders try
        sys.meta_path.remove(self)  # once
        exec_module, threads = spec.loader.exec_module, self.threads

        def exec_and_limit(module: Any) -> None:
            exec_module(module)
            module.set_num_threads(threads)

        spec.loader.exec_module = exec_and_limit
        return spec


def limit_torch_threads(threads: int) -> None:
    """Hold PyTorch's intra-op thread pool to ``threads`` (by default it takes every core, and
    jobs running side by side then fight over them).

    Set now when torch is loaded; otherwise as soon as the job imports it, so the jobs that never
    use torch do not pay its import (seconds) for this. Not through OMP_NUM_THREADS, which the
    pretraining launcher's workers would inherit.
    """
    threads = max(1, int(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    elif not any(isinstance(f, _SetThreadsOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _SetThreadsOnImport(threads))


def run(snakemake: Any, work: Callable[[], object]) -> None:
    """Run ``work`` for a Snakemake job with logging and threads set up and user errors made one line."""
    configure_logging(snakemake.log[0] if len(snakemake.log) else None)
    limit_torch_threads(getattr(snakemake, "threads", 1))
    try:
        work()
    except CellfateError as err:
        log.error("%s", err)  # one line, in the job's log and on stderr
        sys.exit(1)
