"""Atomic writes: a result either exists complete or not at all.

Snakemake removes the outputs of a failed job, but a process killed mid-write (OOM, walltime)
leaves a truncated file that looks finished. Writing to a temporary name in the same directory and
renaming at the end makes every output appear in one step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffix so that writers which infer the format from the
    extension (``.h5ad``, ``.png``) behave the same. On error the temporary is removed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; results should read like any other file
    try:
        yield tmp
        if is_dir and final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_table(frame, path: str | os.PathLike[str], *, index: bool = False) -> None:
    """Write a pandas DataFrame as a tab-separated file, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=index)


def write_h5ad(adata, path: str | os.PathLike[str]) -> None:
    """Write an AnnData as h5ad (gzip-compressed), atomically."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")
