"""One validated reader per file kind: each failure is one line naming the file and the problem.

Every stage reads its inputs through these functions rather than calling ``anndata``, ``json``
or ``zipfile`` directly, so a truncated, empty or wrongly shaped file ends in a
:class:`~cellfate.errors.CellfateError` (one line, exit 1) instead of a library traceback.

:func:`check_content` looks at a file's bytes only (format magic numbers and the format's own
end markers), without the heavy libraries: the downloader calls it on every finished transfer
before anything is recorded in the manifest, so an HTML error page served with status 200, or a
transfer cut short by a server that announced the short size, is never pinned as the truth.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import struct
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cellfate.errors import CellfateError

PathLike = str | os.PathLike[str]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZIP_MAGIC = b"PK\x03\x04"
#: R's save() formats: XDR, ASCII and native binary, versions 2 and 3.
RDATA_MAGICS = tuple(f"RD{f}{v}\n".encode() for f in "XAB" for v in "23")
#: The kinds :func:`check_content` knows, by file-name suffix.
KIND_BY_SUFFIX = {
    ".rdata": "rdata", ".rda": "rdata", ".h5ad": "hdf5", ".h5": "hdf5", ".hdf5": "hdf5", ".loom": "hdf5",
    ".zip": "zip", ".json": "json", ".tsv": "text", ".txt": "text", ".csv": "text", ".gtf": "text",
}


def kind_of(path: PathLike) -> str | None:
    """The file kind a name implies (``x.RData`` -> ``rdata``), None for an unknown suffix."""
    return KIND_BY_SUFFIX.get(Path(path).suffix.lower())


def _head(path: PathLike, n: int = 512) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(n)


def _describe(head: bytes) -> str:
    """What a file that is not of the expected kind looks like, for the error line."""
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "an HTML/XML page (a server error or login page?)"
    if not head:
        return "empty"
    return f"starts with {head[:8]!r}"


def _check_rdata(path: PathLike, head: bytes) -> None:
    """R's save() output: raw, or gzip/bzip2/xz-compressed; the whole stream must decompress."""
    opener = {GZIP_MAGIC: gzip.open, BZIP2_MAGIC: bz2.open, XZ_MAGIC: lzma.open}
    for magic, open_ in opener.items():
        if head.startswith(magic):
            try:
                with open_(path, "rb") as stream:
                    inner = stream.read(5)
                    while stream.read(1 << 20):  # the trailer (CRC, length) is checked at the end
                        pass
            except (EOFError, OSError, zlib.error, lzma.LZMAError) as err:
                raise CellfateError(f"the compressed RData is truncated or corrupt ({err})", path) from None
            break
    else:
        inner = head[:5]
    if inner not in RDATA_MAGICS:
        raise CellfateError(f"not an RData file: {_describe(head if inner == head[:5] else inner)}", path)


def _check_hdf5(path: PathLike, head: bytes) -> None:
    """An HDF5 file (h5ad, loom) whose size reaches the end-of-file address its superblock records."""
    if not head.startswith(HDF5_SIGNATURE):
        raise CellfateError(f"not an HDF5 file (h5ad/loom): {_describe(head)}", path)
    version = head[8]
    offsets = head[13] if version < 2 else head[9]
    if offsets not in (2, 4, 8, 16) or len(head) < 64:
        return  # an unusual superblock: the reader will judge it
    fmt = {2: "<H", 4: "<I", 8: "<Q", 16: "<QQ"}[offsets]
    if version < 2:
        start = 24 if version == 0 else 28
    else:
        start = 12
    base = struct.unpack_from(fmt, head, start)[0]
    eof = struct.unpack_from(fmt, head, start + 2 * offsets)[0]
    size = os.path.getsize(path)
    if base + eof > size and eof != (1 << (8 * min(offsets, 8))) - 1:
        raise CellfateError(f"the HDF5 file is truncated: {size} bytes, its superblock records {base + eof}", path)


def _check_zip(path: PathLike, head: bytes) -> None:
    if not head.startswith(ZIP_MAGIC):
        raise CellfateError(f"not a zip archive: {_describe(head)}", path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
        raise CellfateError(f"the zip archive is truncated or corrupt ({err})", path) from None
    if bad is not None:
        raise CellfateError(f"the zip member {bad} is corrupt (CRC mismatch)", path)


def _check_text(path: PathLike, head: bytes, kind: str) -> None:
    """A text table or JSON document: not an HTML page, no NUL bytes, JSON that parses."""
    what = "JSON document" if kind == "json" else "text table"
    described = _describe(head)
    if described.startswith("an HTML"):
        raise CellfateError(f"not a {what}: {described}", path)
    if b"\x00" in head:
        raise CellfateError(f"not a {what}: binary content", path)
    if kind == "json":
        read_json(path)


def check_content(path: PathLike, kind: str | None = None) -> None:
    """Refuse a file whose bytes are not of ``kind`` (default: from its suffix) or are cut short."""
    kind = kind or kind_of(path)
    if kind is None:
        return
    head = _head(path)
    if kind == "rdata":
        _check_rdata(path, head)
    elif kind == "hdf5":
        _check_hdf5(path, head)
    elif kind == "zip":
        _check_zip(path, head)
    else:
        _check_text(path, head, kind)


def _exists(path: PathLike, what: str) -> None:
    if not Path(path).is_file():
        raise CellfateError(f"the {what} does not exist", path)


def read_json(path: PathLike, what: str = "JSON file") -> Any:
    """A JSON document; a missing or unparsable file is one line."""
    _exists(path, what)
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CellfateError(f"not a readable {what}: {err}", path) from None


def read_h5ad(path: PathLike, *, what: str = "h5ad", backed: str | None = None, obsm: Iterable[str] = (),
              layers: Iterable[str] = (), min_cells: int = 1, unique_cells: bool = False):
    """An AnnData from ``path``, refused in one line if missing, not HDF5, truncated or unreadable,
    with fewer than ``min_cells`` cells, or lacking a required ``obsm``/``layers`` entry."""
    import anndata as ad  # noqa: PLC0415 - heavy; the downloader imports this module without it

    _exists(path, what)
    head = _head(path)
    _check_hdf5(path, head)
    try:
        data = ad.read_h5ad(path, backed=backed)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - h5py/anndata fail on a broken file in many ways
        raise CellfateError(f"not a readable {what}: {type(err).__name__}: {err}", path) from None
    if data.n_obs < min_cells:
        raise CellfateError(f"the {what} has {data.n_obs} cells", path)
    for key in obsm:
        if key not in data.obsm:
            raise CellfateError(f"the {what} has no obsm[{key!r}] ({', '.join(data.obsm) or 'no obsm at all'})", path)
    for key in layers:
        if key not in data.layers:
            raise CellfateError(f"the {what} has no layer {key!r} (layers: {', '.join(data.layers) or 'none'})", path)
    if unique_cells:
        check_unique(data.obs_names, "cell barcode", path)
    return data


def check_unique(names: Iterable[str], what: str, path: PathLike | None) -> None:
    """Refuse repeated names (cell barcodes, gene ids): later joins would silently mix them."""
    import pandas as pd  # noqa: PLC0415

    index = pd.Index(list(names))
    dup = index[index.duplicated()]
    if len(dup):
        raise CellfateError(f"{what} {dup[0]!r} appears more than once ({dup.nunique()} repeated)", path)


def read_velocity_h5ad(path: PathLike):
    """The spliced/unspliced AnnData that VICDYF fits, refused in one line when missing, truncated,
    unreadable (layers of different shapes), without both layers, or with no cell."""
    return read_h5ad(path, what="velocity h5ad", layers=("spliced", "unspliced"), min_cells=1)
