"""Stream a QC'd AnnData file in CSR row chunks, straight from HDF5.

A corpus sample can hold a million cells; loading it whole (as ``anndata.read_h5ad`` does) makes
memory grow with the sample. Reading ``X/indptr`` once and then one slice of ``X/data`` and
``X/indices`` per chunk keeps peak memory at one chunk, whatever the number of cells. ``obs``
columns are sliced the same way, decoding anndata's on-disk encodings (plain arrays,
categoricals, string arrays, nullable arrays) here so that nothing else depends on them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cellfate.errors import CellfateError
from cellfate.readers import check_content


@dataclass(frozen=True)
class Chunk:
    """Rows ``start:stop`` of the count matrix as CSR pieces; ``indptr`` starts at 0."""

    start: int
    stop: int
    indptr: np.ndarray  # int64, length stop - start + 1
    indices: np.ndarray  # column of each stored value
    data: np.ndarray  # stored values (raw counts), file dtype

    @property
    def n_rows(self) -> int:
        return self.stop - self.start


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "OS":
        return np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
    return values


class CountsFile:
    """An open h5ad whose ``X`` is read by row chunks and whose ``obs`` columns by slices."""

    def __init__(self, path: str | os.PathLike[str], handle: h5py.File) -> None:
        self.path = Path(path)
        self._f = handle
        if "X" not in handle:
            raise CellfateError("has no count matrix X", path)
        x = handle["X"]
        if isinstance(x, h5py.Dataset):
            raise CellfateError("X is stored dense; tokenization streams CSR rows (write X as csr_matrix)", path)
        encoding = x.attrs.get("encoding-type", "")
        encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
        if encoding != "csr_matrix":
            raise CellfateError(f"X is stored as {encoding or 'an unknown encoding'}; rows are streamed, so X must be csr_matrix", path)
        self.n_obs, self.n_vars = (int(n) for n in x.attrs["shape"])
        self._indptr = x["indptr"][:].astype(np.int64, copy=False)  # n_obs + 1 integers: small
        self._data = x["data"]
        self._indices = x["indices"]
        self._categories: dict[str, np.ndarray] = {}

    # -- genes -------------------------------------------------------------------------------
    def gene_ids(self) -> np.ndarray:
        """The var index (Ensembl ids), as Python strings."""
        var = self._f["var"]
        index_key = var.attrs.get("_index", "_index")
        index_key = index_key.decode() if isinstance(index_key, bytes) else str(index_key)
        ids = _decode(var[index_key][:])
        return np.asarray([str(g) for g in ids], dtype=object)

    # -- obs ---------------------------------------------------------------------------------
    def obs_columns(self) -> list[str]:
        return [k for k in self._f["obs"].keys() if k != self._f["obs"].attrs.get("_index", "_index")]

    def has_obs(self, name: str) -> bool:
        return name in self._f["obs"]

    def require_obs(self, *names: str) -> None:
        """Fail with one line naming the file and the first missing column."""
        for name in names:
            if not self.has_obs(name):
                raise CellfateError(f"obs has no {name!r} column (QC writes it; found: {', '.join(self.obs_columns())})", self.path)

    def obs(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of one obs column as a numpy array (strings as objects, missing as None)."""
        stop = self.n_obs if stop is None else stop
        element = self._f["obs"][name]
        if isinstance(element, h5py.Dataset):
            encoding = element.attrs.get("encoding-type", "array")
            if isinstance(encoding, bytes):
                encoding = encoding.decode()
            values = element[start:stop]
            return _decode(values) if encoding == "string-array" or values.dtype.kind in "OS" else values
        encoding = element.attrs.get("encoding-type", "")
        encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
        if encoding == "categorical":
            if name not in self._categories:
                self._categories[name] = _decode(element["categories"][:])
            codes = element["codes"][start:stop].astype(np.int64)
            out = np.empty(len(codes), dtype=object)
            cats = self._categories[name]
            valid = codes >= 0
            out[valid] = cats[codes[valid]]
            out[~valid] = None
            return out
        if encoding.startswith("nullable-"):
            values = _decode(element["values"][start:stop])
            mask = element["mask"][start:stop].astype(bool)
            if not mask.any():
                return values
            values = values.astype(object)
            values[mask] = None
            return values
        raise CellfateError(f"obs column {name!r} has an encoding this reader does not know: {encoding!r}", self.path)

    # -- counts ------------------------------------------------------------------------------
    def row_nnz(self, start: int, stop: int) -> np.ndarray:
        return np.diff(self._indptr[start : stop + 1])

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        """Consecutive row chunks of at most ``chunk_size`` rows, in file order."""
        for start, stop in self.chunk_bounds(chunk_size):
            yield self.read_rows(start, stop)

    def chunk_bounds(self, chunk_size: int) -> list[tuple[int, int]]:
        if chunk_size < 1:
            raise CellfateError(f"chunk_size must be positive, got {chunk_size}")
        return [(start, min(start + chunk_size, self.n_obs)) for start in range(0, self.n_obs, chunk_size)]

    def read_rows(self, start: int, stop: int, buffers: "Workspace | None" = None) -> Chunk:
        """Rows ``start:stop``; with ``buffers``, read into its reused arrays (no fresh memory per chunk)."""
        lo, hi = int(self._indptr[start]), int(self._indptr[stop])
        indptr = self._indptr[start : stop + 1] - lo
        if buffers is None or hi == lo:
            return Chunk(start, stop, indptr, self._indices[lo:hi], self._data[lo:hi])
        indices = buffers.array("indices", hi - lo, self._indices.dtype)
        data = buffers.array("data", hi - lo, self._data.dtype)
        self._indices.read_direct(indices, np.s_[lo:hi])
        self._data.read_direct(data, np.s_[lo:hi])
        return Chunk(start, stop, indptr, indices, data)


class Workspace:
    """Named arrays reused from chunk to chunk, grown when a chunk needs more.

    Fresh memory costs a page fault per 4 KiB on first touch: for a chunk of ~6M stored values
    that is more time than the arithmetic, so streaming loops keep one workspace per chunk in
    flight.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, size: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        current = self._arrays.get(name)
        if current is None or current.dtype != dtype or current.size < size:
            current = np.empty(max(size, int(1.25 * size)), dtype=dtype)
            self._arrays[name] = current
        return current[:size]


@contextlib.contextmanager
def open_counts(path: str | os.PathLike[str]) -> Iterator[CountsFile]:
    """Open a QC'd h5ad for streaming; a missing or unreadable file is a one-line error."""
    if not os.path.exists(path):
        raise CellfateError("no such file", path)
    check_content(path, "hdf5")  # the HDF5 signature, and a file cut short named as such
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise CellfateError(f"not a readable HDF5/h5ad file ({err})", path) from None
    with handle:
        yield CountsFile(path, handle)
