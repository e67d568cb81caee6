"""Command lines that start pretraining: torchrun on one node, or one torchrun per node via srun.

One process (the demo on CPU, or one GPU): ``python -m cellfate.foundation.train ...`` directly;
torchrun would add nothing but its own traceback around a failure.

One node, G > 1 GPUs: ``python -m cellfate.foundation.launch torchrun --standalone
--nproc_per_node=G -m cellfate.foundation.train ...`` -- torchrun (run in-process by
:func:`run_torchrun`) starts G processes, one per GPU. A worker that fails prints its own one-line
error; torchrun's ``ChildFailedError`` traceback that would follow is replaced by one ``error:``
line naming the failed ranks and their exit codes.

Several nodes (Slurm): the job's shell runs ``srun --nodes=N --ntasks-per-node=1 python -m
cellfate.foundation.launch --nproc-per-node G -- <train args>``. On every node this module reads
the step's Slurm environment and replaces itself with ``torchrun --nnodes=N --nproc_per_node=G
--rdzv-backend=c10d --rdzv-endpoint=HEAD:PORT --rdzv-id=JOBID -m cellfate.foundation.train ...``,
(the same in-process torchrun) HEAD being the first host of the step's node list, so the N torchruns meet there and number their
N x G workers.

Interpreters are named by absolute path (``sys.executable``): Snakemake does not put the venv on
PATH, and a bare ``torchrun`` or ``python`` would find another Python or none.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from cellfate.errors import CellfateError

TRAIN_MODULE = "cellfate.foundation.train"
LAUNCH_MODULE = "cellfate.foundation.launch"
DEFAULT_PORT = 29500


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a Slurm host list (``gpu[01-03,07],login1``) into host names, in order."""
    hosts: list[str] = []
    for entry in re.findall(r"(?:[^,\[]+|\[[^\]]*\])+", hostlist):
        parts = re.split(r"(\[[^\]]*\])", entry)
        choices: list[list[str]] = []
        for part in parts:
            if not part.startswith("["):
                choices.append([part])
                continue
            values = []
            for item in part[1:-1].split(","):
                low, _, high = item.partition("-")
                if high:
                    width = len(low)
                    values.extend(str(i).zfill(width) for i in range(int(low), int(high) + 1))
                else:
                    values.append(item)
            choices.append(values)
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def torchrun_command(
    nproc_per_node: int,
    train_args: Sequence[str],
    *,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """torchrun for one node (``--standalone``) or, with ``rdzv_endpoint``, one node of many."""
    if nproc_per_node < 1:
        raise CellfateError(f"nproc_per_node must be at least 1, got {nproc_per_node}")
    command = [python, "-m", LAUNCH_MODULE, "torchrun"]
    if nnodes == 1 and rdzv_endpoint is None:
        command += ["--standalone", "--nnodes=1"]
    else:
        if rdzv_endpoint is None:
            raise CellfateError("a multi-node torchrun needs a rendezvous endpoint (HEAD:PORT)")
        command += [
            f"--nnodes={nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv_endpoint}",
            f"--rdzv-id={rdzv_id or 'cellfate-pretrain'}",
            "--max-restarts=0",
        ]
    return command + [f"--nproc_per_node={nproc_per_node}", "-m", TRAIN_MODULE, *train_args]


def slurm_torchrun_command(
    env: Mapping[str, str],
    nproc_per_node: int,
    train_args: Sequence[str],
    *,
    port: int = DEFAULT_PORT,
    python: str = sys.executable,
) -> list[str]:
    """This node's torchrun inside an ``srun`` step: rendezvous on the step's first host."""
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise CellfateError("not inside a Slurm step: SLURM_STEP_NODELIST / SLURM_JOB_NODELIST are unset")
    hosts = expand_hostlist(nodelist)
    nnodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or len(hosts))
    return torchrun_command(
        nproc_per_node,
        train_args,
        nnodes=nnodes,
        rdzv_endpoint=f"{hosts[0]}:{port}",
        rdzv_id=env.get("SLURM_JOB_ID"),
        python=python,
    )


def srun_command(
    nodes: int,
    nproc_per_node: int,
    cpus_per_task: int,
    train_args: Sequence[str],
    *,
    port: int = DEFAULT_PORT,
    srun: str = "srun",
    python: str = sys.executable,
) -> list[str]:
    """The job-level command of a multi-node run: one task per node, each running ``launch`` below."""
    return [
        srun,
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cpus_per_task}",
        f"--gres=gpu:{nproc_per_node}",
        "--kill-on-bad-exit=1",
        python,
        "-m",
        "cellfate.foundation.launch",
        f"--nproc-per-node={nproc_per_node}",
        f"--rdzv-port={port}",
        "--",
        *train_args,
    ]


def pretrain_command(
    gpus: int,
    nodes: int,
    train_args: Sequence[str],
    *,
    cpus_per_task: int = 1,
    port: int = DEFAULT_PORT,
    srun: str = "srun",
) -> list[str]:
    """The whole launch for the pretrain rule: the training module itself for one process (CPU
    when ``gpus`` is 0, or one GPU), torchrun for several GPUs of one node, srun + one torchrun per
    node when ``nodes`` > 1."""
    if nodes > 1:
        if gpus < 1:
            raise CellfateError("multi-node pretraining needs gpus (per node) >= 1")
        return srun_command(nodes, gpus, cpus_per_task, train_args, port=port, srun=srun)
    if gpus <= 1:
        return [sys.executable, "-m", TRAIN_MODULE, *train_args]
    return torchrun_command(gpus, train_args)


def train_arguments(**settings: Any) -> list[str]:
    """``--flag value`` arguments of ``cellfate.foundation.train`` from keyword settings.

    Lists become several values, booleans ``--flag`` / ``--no-flag``, None is left out.
    """
    args: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return args


def exec_logged(command: Sequence[str], log_path: str | None) -> None:
    """Replace this process by ``command`` with stdout and stderr appended to ``log_path``.

    Replacing (not spawning) means Slurm's or Snakemake's signals reach torchrun directly, and
    torchrun stops its workers when one fails.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    os.execv(command[0], list(command))


def failure_line(failures: Mapping[int, Any]) -> str:
    """One line for torchrun's failed workers: {rank: ProcessFailure} -> ranks and exit codes."""
    ranks = sorted(failures)
    codes = ", ".join(f"rank {r} {_exit_words(getattr(failures[r], 'exitcode', '?'))}" for r in ranks[:8])
    more = f" and {len(ranks) - 8} more" if len(ranks) > 8 else ""
    return f"pretraining failed: {len(ranks)} worker(s) stopped ({codes}{more}); each worker's own error line is above"


def _exit_words(code: Any) -> str:
    """'exit 1', or 'stopped by signal 15' where torchrun ended a worker after another failed."""
    if isinstance(code, int) and code < 0:
        return f"stopped by signal {-code}"
    return f"exit {code}"


def run_torchrun(torchrun_args: Sequence[str]) -> int:
    """torchrun in this process, with a failed worker reported as one line instead of a traceback."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # noqa: PLC0415 - heavy
    from torch.distributed.run import parse_args, run  # noqa: PLC0415

    try:
        run(parse_args(list(torchrun_args)))
    except ChildFailedError as err:
        print(f"error: {failure_line(err.failures)}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """``torchrun <args>``: torchrun without its traceback (see :func:`run_torchrun`). Otherwise the
    per-node entry under srun: build this node's torchrun from the Slurm environment and exec it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["torchrun"]:
        sys.exit(run_torchrun(argv[1:]))
    parser = argparse.ArgumentParser(
        prog="python -m cellfate.foundation.launch",
        description="Start this node's torchrun for multi-node pretraining.",
    )
    parser.add_argument("--nproc-per-node", type=int, required=True)
    parser.add_argument("--rdzv-port", type=int, default=DEFAULT_PORT)
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of the training module")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    try:
        command = slurm_torchrun_command(os.environ, args.nproc_per_node, train_args, port=args.rdzv_port)
    except CellfateError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(" ".join(command), file=sys.stderr, flush=True)
    exec_logged(command, None)


if __name__ == "__main__":
    main()
