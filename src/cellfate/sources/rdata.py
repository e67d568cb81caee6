"""Read a sparse count matrix (an S4 ``dgCMatrix``) out of an R workspace, as PanglaoDB ships them.

Each PanglaoDB sample is an ``.RData`` file holding one object ``sm``: genes x cells, row names
such as ``Xkr4_ENSMUSG00000051951``, column names the cell barcodes. R is not needed to read it:
the ``rdata`` package parses R's serialization format into a tree of objects, and a dgCMatrix is
just compressed-sparse-column arrays in its slots (``i``, ``p``, ``x``, ``Dim``, ``Dimnames``), so
the matrix is assembled here directly. The high-level ``rdata`` converter is not used because it
does not turn S4 objects into anything useful.

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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rdata
import scipy.sparse as sp
from rdata.parser import RObject, RObjectType

from cellfate.errors import CellfateError

# First bytes of each compression R's save() can use, and of the workspace formats inside.
_DECOMPRESSORS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
_WORKSPACE_MAGICS = {b"RDX2\n", b"RDX3\n", b"RDA2\n", b"RDA3\n", b"RDB2\n", b"RDB3\n"}
_RDS_MAGICS = (b"X\n", b"A\n", b"B\n")  # saveRDS() output: one bare object, no workspace header

# How R itself would name an unclassed object of each type, for error messages.
_R_TYPE_NAMES = {
    RObjectType.NIL: "NULL",
    RObjectType.NILVALUE: "NULL",
    RObjectType.LGL: "logical",
    RObjectType.INT: "integer",
    RObjectType.REAL: "numeric",
    RObjectType.CPLX: "complex",
    RObjectType.STR: "character",
    RObjectType.VEC: "list",
    RObjectType.CLO: "function",
    RObjectType.ENV: "environment",
    RObjectType.S4: "S4 object",
}

_LATIN1_FLAG = 1 << 2  # CHARSXP levels bits (R's LATIN1_MASK)


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


def _deref(obj: RObject) -> RObject:
    """Follow R's back-references (a repeated symbol or environment is written once, then referred to)."""
    while obj.info.type is RObjectType.REF:
        obj = obj.referenced_object
    return obj


def _text(char: RObject) -> str | None:
    """The Python string in one CHARSXP; None for ``NA``."""
    char = _deref(char)
    if char.value is None:
        return None
    encoding = "latin-1" if char.info.gp & _LATIN1_FLAG else "utf-8"
    return char.value.decode(encoding, errors="replace")


def _pairlist(obj: RObject | None) -> Iterator[tuple[str | None, RObject]]:
    """Yield ``(tag, value)`` for each cell of a pairlist (the workspace, or an attribute list)."""
    while obj is not None and (obj := _deref(obj)).info.type is RObjectType.LIST:
        car, cdr = obj.value
        tag = None if obj.tag is None else _text(_deref(obj.tag).value)
        yield tag, _deref(car)
        obj = cdr


def _attributes(obj: RObject) -> dict[str | None, RObject]:
    """An object's attributes; for an S4 object these are its slots, plus ``class``."""
    return dict(_pairlist(obj.attributes))


def _strings(obj: RObject) -> list[str | None]:
    return [_text(c) for c in obj.value] if obj.info.type is RObjectType.STR else []


def _describe(obj: RObject) -> str:
    """Name the kind of object found, the way ``class()`` in R would."""
    attrs = _attributes(obj)
    classes = [c for c in _strings(attrs["class"]) if c] if "class" in attrs else []
    if classes:
        return "/".join(classes)
    type_name = _R_TYPE_NAMES.get(obj.info.type, obj.info.type.name.lower())
    return f"base R matrix ({type_name})" if "dim" in attrs else type_name


def _names(attrs: dict[str | None, RObject], axis: int, length: int, what: str, path: Path) -> list[str]:
    """Row (axis 0) or column (axis 1) names from the Dimnames slot, which must be complete."""
    dimnames = attrs.get("Dimnames")
    if dimnames is None or dimnames.info.type is not RObjectType.VEC or len(dimnames.value) != 2:
        raise CellfateError("dgCMatrix has a malformed Dimnames slot", path)
    entry = _deref(dimnames.value[axis])
    if entry.info.type is not RObjectType.STR:
        raise CellfateError(f"dgCMatrix has no {what} names (Dimnames[[{axis + 1}]] is NULL)", path)
    names = _strings(entry)
    if len(names) != length:
        raise CellfateError(f"dgCMatrix has {length} {what}s but {len(names)} {what} names", path)
    if None in names:
        raise CellfateError(f"dgCMatrix has NA among its {what} names", path)
    return names  # type: ignore[return-value]  # no None left


def _slot(attrs: dict[str | None, RObject], slot: str, rtype: RObjectType, path: Path) -> np.ndarray:
    obj = attrs.get(slot)
    if obj is None or obj.info.type is not rtype:
        found = "missing" if obj is None else _describe(obj)
        raise CellfateError(f"dgCMatrix slot {slot} should be {_R_TYPE_NAMES[rtype]} but is {found}", path)
    return np.asarray(obj.value)


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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata warns about constructs we do not use
            parsed = rdata.parser.parse_file(path)
    except MemoryError:
        raise
    except Exception as exc:  # the parser fails on bad bytes with assorted exception types
        detail = f"{type(exc).__name__}: {exc}"[:200]
        raise CellfateError(f"corrupt or truncated R workspace ({detail})", path) from None

    objects = dict(_pairlist(parsed.object))
    if name not in objects:
        present = ", ".join(f"`{n}`" for n in objects) or "none"
        raise CellfateError(f"no object named `{name}` in the workspace (objects present: {present})", path)
    obj = objects[name]
    attrs = _attributes(obj)
    classes = _strings(attrs["class"]) if "class" in attrs else []
    if obj.info.type is not RObjectType.S4 or classes[:1] != ["dgCMatrix"]:
        raise CellfateError(f"`{name}` is a {_describe(obj)}, not a dgCMatrix (Matrix package)", path)

    dim = _slot(attrs, "Dim", RObjectType.INT, path)
    if dim.shape != (2,) or dim.min() < 0:
        raise CellfateError(f"inconsistent dgCMatrix: Dim slot is {dim.tolist()}", path)
    n_rows, n_cols = (int(d) for d in dim)
    i = _slot(attrs, "i", RObjectType.INT, path)
    p = _slot(attrs, "p", RObjectType.INT, path)
    x = _slot(attrs, "x", RObjectType.REAL, path)
    _check_slots(i, p, x, n_rows, n_cols, path)
    row_names = _names(attrs, 0, n_rows, "row", path)
    col_names = _names(attrs, 1, n_cols, "column", path)

    matrix = sp.csc_matrix(
        (x.astype(np.float64, copy=False), i.astype(np.int32, copy=False), p.astype(np.int32, copy=False)),
        shape=(n_rows, n_cols),
    )
    return matrix, row_names, col_names
