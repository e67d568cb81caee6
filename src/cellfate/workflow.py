"""The one adaptor between Snakemake's ``script:`` directive and package calls.

Every workflow script does ``run(snakemake, work)``: logging goes to the rule's ``log:`` file, a
:class:`~cellfate.errors.CellfateError` becomes one ``error:`` line and exit status 1 (Snakemake
then deletes the job's outputs), and anything else keeps its traceback because it is a bug.
"""

from __future__ import annotations

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


def run(snakemake: Any, work: Callable[[], object]) -> None:
    """Run ``work`` for a Snakemake job with logging set up and user errors made one line."""
    configure_logging(snakemake.log[0] if len(snakemake.log) else None)
    try:
        work()
    except CellfateError as err:
        log.error("%s", err)  # one line, in the job's log and on stderr
        sys.exit(1)
