"""A real one-node Slurm cluster on this machine, for the cluster-execution tests.

Needs root and Debian's ``munge slurmctld slurmd slurm-client`` (installed here with apt-get
when missing and running as root). The cluster lives in a temporary folder: its own slurm.conf
(on free ports, so it cannot collide with another cluster), state, logs and a job-completion
log that records every job it ran. One fake GPU is declared through gres (File=/dev/null), so
GPU rules are scheduled as on a real GPU node. Only the daemons this class started are stopped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client"]
#: Where Slurm commands look without SLURM_CONF. Snakemake's Slurm jobstep executor drops every
#: SLURM_* variable before its inner srun, so the job's srun only finds a config here (or
#: configless): the test cluster links its config here while it runs, if the place is free.
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


def unavailable_reason() -> str | None:
    """Why a local Slurm cannot be brought up here, or None if it can."""
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd runs jobs as their owner)"
    if DEFAULT_CONF.is_symlink() and not DEFAULT_CONF.exists():
        DEFAULT_CONF.unlink()  # a dangling link: left by a test cluster whose run was killed
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        return f"{DEFAULT_CONF} exists: this machine has a Slurm of its own, which the test must not replace"
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")):
        return None
    if not shutil.which("apt-get"):
        return f"Slurm is not installed and there is no apt-get: install {' '.join(PACKAGES)}"
    result = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                            capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if result.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {result.stderr.strip().splitlines()[-1:]}"
    return None


def _fields(line: str) -> dict[str, str]:
    """One job as Slurm prints it on a line: space-separated ``key=value`` fields."""
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalSlurm:
    """``with LocalSlurm(tmp) as slurm:`` -> ``slurm.env`` for sbatch/squeue and Snakemake.

    The node declares 4 CPUs and 16 GB whatever the machine has (config_overrides): test jobs are light and mostly wait on
    Python start-up, so oversubscribing keeps the test short.
    """

    def __init__(self, root: Path, cpus: int = 4, memory_mb: int = 16000) -> None:
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.cpus, self.memory_mb = cpus, memory_mb
        self.procs: list[subprocess.Popen] = []
        self.munged_pid: int | None = None
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "jobcomp.txt"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        r, h = self.root, self.host
        self.conf.write_text("\n".join([
            "ClusterName=cellfatetest", f"SlurmctldHost={h}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "MailProg=/bin/true",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/slurmctld.log", f"SlurmdLogFile={r}/slurmd.log",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt", f"JobCompLoc={self.jobcomp}",
            "MinJobAge=3600", "ReturnToService=2", "SlurmdParameters=config_overrides", "GresTypes=gpu", "SchedulerParameters=sched_interval=2",
            f"NodeName={h} NodeAddr=127.0.0.1 NodeHostname={h} CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:1 State=UNKNOWN",
            f"PartitionName=debug Nodes={h} Default=YES MaxTime=INFINITE State=UP", "",
        ]))
        (self.root / "gres.conf").write_text(f"NodeName={h} Name=gpu File=/dev/null\n")

    def _start_munge(self) -> None:
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
            return  # a running munged serves every cluster on this machine
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["mungekey", "--create"], check=True)
            shutil.chown("/etc/munge/munge.key", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
        self.munged_pid = int(Path("/run/munge/munged.pid").read_text())

    def _wait(self, command: list[str], ok, what: str, seconds: float = 60) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            result = subprocess.run(command, capture_output=True, text=True, env=self.env)
            if result.returncode == 0 and ok(result.stdout):
                return
            time.sleep(0.5)
        logs = sorted(self.root.glob("*.log"))
        tail = "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]) for log in logs)
        raise RuntimeError(f"local Slurm: {what} did not come up; the daemons' logs end with:\n{tail}")

    def __enter__(self) -> LocalSlurm:
        self._write_config()
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(self.conf)
        try:
            self._start()
        except BaseException:
            self.__exit__()  # a cluster that did not come up leaves neither daemons nor the link behind
            raise
        return self

    def _start(self) -> None:
        self._start_munge()
        self.procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(self.conf)], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self._wait(["scontrol", "ping"], lambda out: "UP" in out, "slurmctld")
        self.procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(self.conf)], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self._wait(["sinfo", "-h", "-o", "%T"], lambda out: out.strip() == "idle", "slurmd")

    def __exit__(self, *exc) -> None:
        subprocess.run(["scancel", "--user=root", "--full"], env=self.env, capture_output=True)
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if DEFAULT_CONF.is_symlink() and DEFAULT_CONF.resolve() == self.conf.resolve():
            DEFAULT_CONF.unlink()
        if self.munged_pid:
            try:
                os.kill(self.munged_pid, 15)
            except ProcessLookupError:
                pass

    def job_requests(self) -> dict[str, dict[str, str]]:
        """What each job asked for, from ``scontrol show job`` (job id -> its fields).

        Finished jobs stay listed for MinJobAge (an hour). This is where a GPU request shows
        (``TresPerJob``/``TresPerNode`` = ``gres:gpu:N``): the job-completion log's TRES lists
        gres only when accounting tracks it, which needs a slurmdbd this cluster does not run.
        """
        result = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True,
                                env=self.env, check=True)
        jobs = (_fields(line) for line in result.stdout.splitlines())
        return {job["JobId"]: job for job in jobs if "JobId" in job}

    def completed_jobs(self) -> list[dict[str, str]]:
        """Every job the cluster finished, from the job-completion log (key=value per line)."""
        if not self.jobcomp.exists():
            return []
        return [_fields(line) for line in self.jobcomp.read_text().splitlines()]
