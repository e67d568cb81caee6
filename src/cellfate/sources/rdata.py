"""Read a sparse count matrix (an S4 ``dgCMatrix``) out of an R workspace, as PanglaoDB ships them.

Each PanglaoDB sample is an ``.RData`` file holding one object ``sm``: genes x cells, row names
such as ``Xkr4_ENSMUSG00000051951``, column names the cell barcodes. R is not needed to read it:
``rdata.read_rda`` parses R's serialization format and hands each S4 ``dgCMatrix`` (its slots
``i``, ``p``, ``x``, ``Dim``, ``Dimnames``) to the constructor registered here, which checks the
slots as R's ``validObject()`` would and builds the compressed-sparse-column matrix.

Downloads go wrong in mundane ways (an HTML error page saved as ``.RData``, a cut-off transfer, a
sample saved with another object name), so every such problem becomes a one-line
:class:`~cellfate.errors.CellfateError` that names the file.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import rdata
import scipy.sparse as sp

from cellfate.errors import CellfateError

# First bytes of each compression R's save() can use, and of the workspace formats inside.
_DECOMPRESSORS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
_WORKSPACE_MAGICS = {b"RDX2\n", b"RDX3\n", b"RDA2\n", b"RDA3\n", b"RDB2\n", b"RDB3\n"}
_RDS_MAGICS = (b"X\n", b"A\n", b"B\n")  # saveRDS() output: one bare object, no workspace header

# How R names the storage type of a converted vector or matrix, for error messages.
_R_TYPE_NAMES = {"b": "logical", "i": "integer", "u": "integer", "f": "numeric", "c": "complex", "U": "character"}


@dataclass(frozen=True)
class _DgCMatrix:
    """A dgCMatrix as ``rdata`` hands it over: the S4 slots, not yet checked."""

    slots: SimpleNamespace


def _check_is_workspace(path: Path) -> None:
    """Look at the first bytes (decompressed if need be) before handing the file to the parser.

    ``rdata`` guesses "an .rds file" for anything it does not recognise and then fails somewhere
    deep inside, so a wrong file type is caught here, where the message can say what it is.
    """
    try:
        with open(path, "rb") as raw:
            start = raw.read(6)
        opener = next((o for magic, o in _DECOMPRESSORS.items() if start.startswith(magic)), None)
        if opener is not None:
            with opener(path, "rb") as stream:
                start = stream.read(6)
    except FileNotFoundError:
        raise CellfateError("file not found", path) from None
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise CellfateError(f"corrupt or truncated compressed file ({exc})", path) from None
    if start[:5] in _WORKSPACE_MAGICS:
        return
    if start.startswith(_RDS_MAGICS):
        raise CellfateError("this is an .rds file (saveRDS), not an R workspace (save)", path)
    raise CellfateError("not an R workspace (.RData): unrecognised file header", path)


def _describe(obj: Any) -> str:
    """Name the kind of object found, the way ``class()`` in R would (after ``rdata``'s conversion)."""
    if isinstance(obj, pd.DataFrame):
        return "data.frame"
    if isinstance(obj, pd.Categorical | pd.Series):
        return "factor"
    if isinstance(obj, SimpleNamespace) and hasattr(obj, "class"):
        return "/".join(str(c) for c in np.atleast_1d(getattr(obj, "class")))
    if isinstance(obj, np.ndarray):
        type_name = _R_TYPE_NAMES.get(obj.dtype.kind, str(obj.dtype))
        return f"base R matrix ({type_name})" if obj.ndim == 2 else type_name
    if obj is None:
        return "NULL"
    return "list" if isinstance(obj, list | dict) else type(obj).__name__


def _names(slots: SimpleNamespace, axis: int, length: int, what: str, path: Path) -> list[str]:
    """Row (axis 0) or column (axis 1) names from the Dimnames slot, which must be complete."""
    dimnames = getattr(slots, "Dimnames", None)
    if not isinstance(dimnames, list) or len(dimnames) != 2:
        raise CellfateError("dgCMatrix has a malformed Dimnames slot", path)
    entry = dimnames[axis]
    if entry is None:
        raise CellfateError(f"dgCMatrix has no {what} names (Dimnames[[{axis + 1}]] is NULL)", path)
    names = list(np.asarray(entry, dtype=object))
    if len(names) != length:
        raise CellfateError(f"dgCMatrix has {length} {what}s but {len(names)} {what} names", path)
    if any(n is None or (isinstance(n, float) and np.isnan(n)) for n in names):
        raise CellfateError(f"dgCMatrix has NA among its {what} names", path)
    return [str(n) for n in names]


def _slot(slots: SimpleNamespace, slot: str, kinds: str, r_type: str, path: Path) -> np.ndarray:
    value = getattr(slots, slot, None)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in kinds:
        found = "missing" if value is None else _describe(value)
        raise CellfateError(f"dgCMatrix slot {slot} should be {r_type} but is {found}", path)
    return value


def _check_slots(i: np.ndarray, p: np.ndarray, x: np.ndarray, n_rows: int, n_cols: int, path: Path) -> None:
    """The invariants R's ``validObject()`` checks for a dgCMatrix, so a bad file fails here, not later."""
    if len(p) != n_cols + 1:
        raise CellfateError(
            f"inconsistent dgCMatrix: {n_cols} columns but len(p) = {len(p)} (expected {n_cols + 1})", path
        )
    if p[0] != 0 or np.any(np.diff(p) < 0):
        raise CellfateError("inconsistent dgCMatrix: column pointers p do not start at 0 and increase", path)
    if not (len(i) == len(x) == p[-1]):
        raise CellfateError(f"inconsistent dgCMatrix: len(i) = {len(i)}, len(x) = {len(x)}, p[ncol] = {p[-1]}", path)
    if len(i) and (i.min() < 0 or i.max() >= n_rows):
        raise CellfateError(f"inconsistent dgCMatrix: row indices outside 0..{n_rows - 1}", path)


def _parse(path: Path) -> dict[str, Any]:
    """Every object of the workspace, each dgCMatrix wrapped unchecked; parser failures as one line."""
    constructors = {**rdata.conversion.DEFAULT_CLASS_MAP, "dgCMatrix": lambda obj, attrs: _DgCMatrix(obj)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata warns about constructs we do not use
            return rdata.read_rda(path, constructor_dict=constructors)
    except MemoryError:
        raise
    except Exception as exc:  # the parser fails on bad bytes with assorted exception types
        detail = f"{type(exc).__name__}: {exc}"[:200]
        raise CellfateError(f"corrupt or truncated R workspace ({detail})", path) from None


def read_rdata_dgcmatrix(
    path: str | os.PathLike[str], name: str = "sm"
) -> tuple[sp.csc_matrix, list[str], list[str]]:
    """Read the dgCMatrix ``name`` from the R workspace at ``path``.

    Returns ``(matrix, row_names, col_names)``: a float64 CSC matrix of the same shape as in R
    (for PanglaoDB, genes x cells) and its dimnames. The file may be gzip-, bzip2-, xz-compressed
    or not at all, as ``save()`` allows. Raises :class:`CellfateError` for anything that is not a
    complete workspace holding a valid, fully named dgCMatrix under ``name``.
    """
    path = Path(path)
    _check_is_workspace(path)
    objects = _parse(path)
    if name not in objects:
        present = ", ".join(f"`{n}`" for n in objects) or "none"
        raise CellfateError(f"no object named `{name}` in the workspace (objects present: {present})", path)
    obj = objects[name]
    if not isinstance(obj, _DgCMatrix):
        raise CellfateError(f"`{name}` is a {_describe(obj)}, not a dgCMatrix (Matrix package)", path)
    slots = obj.slots
    dim = _slot(slots, "Dim", "iu", "integer", path)
    if dim.shape != (2,) or dim.min() < 0:
        raise CellfateError(f"inconsistent dgCMatrix: Dim slot is {dim.tolist()}", path)
    n_rows, n_cols = (int(d) for d in dim)
    i = _slot(slots, "i", "iu", "integer", path)
    p = _slot(slots, "p", "iu", "integer", path)
    x = _slot(slots, "x", "f", "numeric", path)
    _check_slots(i, p, x, n_rows, n_cols, path)
    row_names = _names(slots, 0, n_rows, "row", path)
    col_names = _names(slots, 1, n_cols, "column", path)
    matrix = sp.csc_matrix(
        (x.astype(np.float64, copy=False), i.astype(np.int32, copy=False), p.astype(np.int32, copy=False)),
        shape=(n_rows, n_cols),
    )
    return matrix, row_names, col_names
