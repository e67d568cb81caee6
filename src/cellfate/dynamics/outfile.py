"""The ``vicdyf_fit`` output h5ad, written without VICDYF's four cells x genes layers in memory.

Held whole, the four float32 layers are 16 bytes per cell x gene (3.2 GB at 100k cells x 2,000
genes) on top of the counts and the model's copies. Here each batch of the posterior goes into
a gzip dataset of a scratch HDF5 file beside the output as soon as it is computed; anndata then
writes everything else (counts, obs, obsm, var, uns) into the temporary output, the scratch
datasets are copied into its ``layers`` group (HDF5 copies them chunk by chunk) under anndata's
encoding of a dense array, and the temporary is renamed onto the output. ``anndata.read_h5ad``
and scVelo read the same keys as from an AnnData annotated in memory and written whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import h5py
import numpy as np

from cellfate.dynamics.model import OUTPUT_KEYS, VICDYF
from cellfate.io import atomic_path

#: How anndata marks a dense array and a dict (``encoding-type`` / ``encoding-version``).
ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}
DICT_ATTRS = {"encoding-type": "dict", "encoding-version": "0.1.0"}
#: Rows per HDF5 chunk are a power of two that divides the posterior's batch, at most ~1 MiB per
#: chunk: every batch then fills whole chunks (a partly written gzip chunk is read back and recompressed).
BATCH, CHUNK_BYTES = 512, 2**20


def chunk_rows(n_cells: int, n_genes: int) -> int:
    """Rows of one chunk: whole chunks per batch, about CHUNK_BYTES each, never more than the cells."""
    rows = BATCH
    while rows > 1 and rows * n_genes * 4 > CHUNK_BYTES:
        rows //= 2
    return max(1, min(rows, n_cells))


class LayerSpool:
    """The output layers, received batch by batch (:data:`cellfate.dynamics.model.LayerSink`), in
    gzip datasets of an open HDF5 file."""

    def __init__(self, handle: h5py.File, n_cells: int, n_genes: int) -> None:
        self.handle, self.shape = handle, (n_cells, n_genes)
        self.chunks = (chunk_rows(n_cells, n_genes), n_genes)

    def __call__(self, key: str, start: int, block: np.ndarray) -> None:
        if key not in self.handle:
            self.handle.create_dataset(key, shape=self.shape, dtype=np.float32, chunks=self.chunks,
                                       compression="gzip")
        self.handle[key][start:start + len(block)] = block

    def copy_into(self, path: Path) -> None:
        """Every spooled layer into ``layers/`` of the h5ad at ``path``, marked as anndata marks an array."""
        with h5py.File(path, "a") as out:
            if "layers" not in out:
                out.create_group("layers").attrs.update(DICT_ATTRS)
            for key in self.handle:
                self.handle.copy(self.handle[key], out["layers"], name=key)
                out["layers"][key].attrs.update(ARRAY_ATTRS)


def write_annotated(model: VICDYF, adata: ad.AnnData, path: str | os.PathLike[str], *, n_samples: int,
                    seed: int, n_neighbors: int) -> ad.AnnData:
    """``model.annotate(adata, ...)`` written to the h5ad at ``path`` (gzip, atomically) with the
    output layers streamed to disk; ``adata`` gets every output but the four layers."""
    with atomic_path(path) as tmp:
        scratch = tmp.with_name(tmp.name + ".layers")
        try:
            with h5py.File(scratch, "w") as handle:
                spool = LayerSpool(handle, adata.n_obs, adata.n_vars)
                model.annotate(adata, n_samples=n_samples, seed=seed, n_neighbors=n_neighbors, layers=spool)
                missing = set(OUTPUT_KEYS["layers"]) - set(handle)
                if missing:
                    raise RuntimeError(f"layers not computed: {sorted(missing)}")
                adata.write_h5ad(tmp, compression="gzip")
                spool.copy_into(tmp)
        finally:
            scratch.unlink(missing_ok=True)
    return adata
