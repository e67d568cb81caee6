"""Run ``velocyto run`` on one sample, into an output directory of its own.

Why not ``velocyto run10x``: it writes into the Cell Ranger folder and refuses to overwrite, which
breaks re-runs and read-only inputs. ``velocyto run`` also writes its cell-sorted BAM copy beside
the input BAM (after resolving symbolic links) and silently reuses one it finds there; so velocyto
here sees the BAM through a hard link in a fresh staging folder: its ``cellsorted_*.bam`` lands
there and is removed, and the input folder is never written to. Where a hard link is impossible
(another file system), velocyto runs on the BAM itself and the cell-sorted copy it leaves is
deleted afterwards, also after a failure, so that no half-written copy is reused later. The loom
appears atomically: the output directory exists complete or not at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cellfate.errors import CellfateError
from cellfate.io import atomic_path
from cellfate.velocity.guards import check_inputs, stale_cellsorted_path

log = logging.getLogger(__name__)


def velocyto_executable() -> str:
    """``velocyto`` next to this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "velocyto"
    if beside.exists():
        return str(beside)
    found = shutil.which("velocyto")
    if found is None:
        raise CellfateError("the velocyto command is not installed (pip install --no-build-isolation velocyto==0.17.17)")
    return found


def _hard_link(target: Path, link: Path) -> bool:
    """Hard-link ``target`` as ``link``; False where the file system does not allow it."""
    try:
        os.link(target.resolve(), link)
    except OSError as err:
        log.info("cannot hard-link %s into the staging folder (%s)", target, err)
        return False
    return True


def run_velocyto(
    bam: str | os.PathLike[str],
    gtf: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    *,
    sample_id: str,
    barcodes: str | os.PathLike[str] | None = None,
    mask: str | os.PathLike[str] | None = None,
    samtools_threads: int = 1,
    samtools_memory_mb: int = 1024,
    check: bool = True,
) -> Path:
    """Count spliced/unspliced molecules of ``bam``; returns the loom ``outdir/<sample_id>.loom``.

    ``barcodes`` (the sample's ``barcodes.tsv``, ``CB`` values) restricts counting to those cells;
    ``mask`` is an optional repeat-mask GTF. The inputs are checked first
    (:func:`cellfate.velocity.guards.check_inputs`) unless ``check`` is false.
    """
    bam, gtf, outdir = Path(bam), Path(gtf), Path(outdir)
    if not sample_id or "/" in sample_id or ":" in sample_id:
        raise CellfateError(f"sample_id {sample_id!r} must be a non-empty name without '/' or ':'")
    if check:
        check_inputs(bam, gtf, barcodes, mask)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(outdir, is_dir=True) as tmp_out, tempfile.TemporaryDirectory(prefix=".velocyto_staging.", dir=outdir.parent) as stage:
        staged = Path(stage) / bam.name
        if _hard_link(bam, staged):
            for index in (Path(str(bam) + ".bai"), bam.with_suffix(".bai")):
                if index.exists():
                    _hard_link(index, Path(stage) / index.name)
        else:
            staged = bam
            log.warning("velocyto runs on %s itself; its cell-sorted copy there is removed afterwards", bam)
        command = [velocyto_executable(), "run", "-o", str(tmp_out), "-e", sample_id,
                   "-@", str(int(samtools_threads)), "--samtools-memory", str(int(samtools_memory_mb))]
        if barcodes is not None:
            command += ["-b", str(barcodes)]
        if mask is not None:
            command += ["-m", str(mask)]
        command += [str(staged), str(gtf)]
        log.info("running: %s", " ".join(command))
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        finally:
            if staged == bam:
                stale_cellsorted_path(bam).unlink(missing_ok=True)
        for line in (result.stdout + result.stderr).splitlines():
            if line.strip():
                log.info("velocyto: %s", line.rstrip())
        if result.returncode != 0:
            last = next((line for line in reversed(result.stderr.splitlines()) if line.strip()), "no message")
            raise CellfateError(f"velocyto run failed (exit {result.returncode}): {last.strip()}", bam)
        looms = sorted(tmp_out.glob("*.loom"))
        if [p.name for p in looms] != [f"{sample_id}.loom"]:
            raise CellfateError(f"velocyto wrote {[p.name for p in looms]} instead of {sample_id}.loom", outdir)
    loom = outdir / f"{sample_id}.loom"
    log.info("wrote %s", loom)
    return loom
