"""Checksum manifest: the size and sha256 of every downloaded file, recorded on first download.

PanglaoDB and the Expression Atlas publish no checksums, so the first complete download defines
them; every later download of the same accession must reproduce them exactly, which catches a
truncated transfer, a server that silently changed a file, or a corrupted cache. One small JSON
file per download keeps concurrent jobs from racing on a shared file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cellfate.io import write_text


@dataclass(frozen=True)
class ManifestEntry:
    """What a finished download must look like."""

    url: str
    size: int
    sha256: str


def sha256_of(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(manifest_dir: str | os.PathLike[str], key: str) -> Path:
    """Where the entry of one download (``key`` like ``panglaodb/SRA1_SRS1.RData``) is kept."""
    return Path(manifest_dir) / f"{key}.json"


def read_entry(path: str | os.PathLike[str]) -> ManifestEntry | None:
    """The recorded entry, or None before the first download."""
    path = Path(path)
    if not path.exists():
        return None
    return ManifestEntry(**json.loads(path.read_text()))


def write_entry(path: str | os.PathLike[str], entry: ManifestEntry) -> None:
    """Record an entry atomically."""
    write_text(path, json.dumps(asdict(entry), indent=1) + "\n")
