"""velocyto's loom as AnnData: integer spliced/unspliced layers on the sample's QC'd cells.

velocyto names cells ``<sample>:<barcode>x`` (the ``-1`` of ``CB`` dropped, an ``x`` appended when
run with ``-b``) and genes by symbol (``Gene``, not unique) and id (``Accession``). Cells are matched
to the QC'd AnnData on the bare barcode, so ``AAAC...-1``, ``AAAC...`` and ``sample:AAAC...x``
meet; genes are indexed by their Ensembl id, with the symbol in ``var['symbol']``.
"""

from __future__ import annotations

import logging
import os
import re

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.errors import CellfateError

log = logging.getLogger(__name__)

LAYERS = ("spliced", "unspliced", "ambiguous")
_CORE_RE = re.compile(r"^(?:[^:]*:)?(.*?)(?:-\d+)?x?$")


def bare_barcode(cell_id: str) -> str:
    """The barcode without velocyto's ``sample:`` prefix and ``x`` suffix or Cell Ranger's ``-1``."""
    match = _CORE_RE.match(str(cell_id))
    return match.group(1) if match else str(cell_id)


def read_loom(path: str | os.PathLike[str]) -> ad.AnnData:
    """All cells and genes of a velocyto loom; layers as sparse int32 (cells x genes)."""
    import loompy  # imported here: only counting needs it

    try:
        loom = loompy.connect(str(path), mode="r", validate=False)
    except OSError as err:
        raise CellfateError(f"not a readable loom ({err})", path) from None
    with loom:
        missing = [name for name in ("spliced", "unspliced") if name not in loom.layers.keys()]
        if missing:
            raise CellfateError(f"the loom has no {missing} layer(s); is it velocyto's output?", path)
        for key, attrs in (("CellID", loom.ca), ("Accession", loom.ra), ("Gene", loom.ra)):
            if key not in attrs.keys():
                raise CellfateError(f"the loom lacks the attribute {key!r}", path)
        obs = pd.DataFrame({"loom_cell_id": np.asarray(loom.ca["CellID"]).astype(str)})
        var = pd.DataFrame({"symbol": np.asarray(loom.ra["Gene"]).astype(str)},
                           index=pd.Index(np.asarray(loom.ra["Accession"]).astype(str), name="gene_id"))
        for key in ("Chromosome", "Strand", "Start", "End"):
            if key in loom.ra.keys():
                var[key.lower()] = np.asarray(loom.ra[key])
        layers = {name: sp.csr_matrix(loom.layers[name].sparse().T, dtype=np.int32)
                  for name in LAYERS if name in loom.layers.keys()}
    if var.index.duplicated().any():
        raise CellfateError(f"gene id {var.index[var.index.duplicated()][0]!r} appears twice in the loom", path)
    obs.index = pd.Index([bare_barcode(c) for c in obs["loom_cell_id"]], name="barcode")
    if obs.index.duplicated().any():
        raise CellfateError(f"barcode {obs.index[obs.index.duplicated()][0]!r} appears twice in the loom", path)
    adata = ad.AnnData(X=layers["spliced"].copy(), obs=obs, var=var, layers=layers)
    return adata


def join_cells(counts: ad.AnnData, cells: ad.AnnData, barcode_key: str | None = "barcode",
               source: str | os.PathLike[str] | None = None) -> ad.AnnData:
    """The loom's counts on the QC'd ``cells``, in their order, with their obs and obs_names.

    ``barcode_key`` names the obs column of ``cells`` holding the barcode; None (or a column that
    is absent) uses ``cells.obs_names``. QC'd cells that velocyto did not count are dropped with a
    warning; none in common is an error.
    """
    if barcode_key and barcode_key in cells.obs:
        keys = cells.obs[barcode_key].astype(str)
    else:
        keys = pd.Series(cells.obs_names, index=cells.obs_names)
    bare = pd.Index([bare_barcode(k) for k in keys])
    if bare.duplicated().any():
        raise CellfateError(f"barcode {bare[bare.duplicated()][0]!r} appears twice among the QC'd cells", source)
    found = bare.isin(counts.obs_names)
    if not found.any():
        raise CellfateError(
            f"no QC'd cell is in the loom (QC'd e.g. {list(bare[:2])}, loom e.g. {list(counts.obs_names[:2])})", source
        )
    if not found.all():
        log.warning("%d of %d QC'd cells have no velocyto counts and are dropped", int((~found).sum()), len(found))
    joined = counts[bare[found]].copy()
    joined.obs = cells.obs.loc[found].copy()
    joined.obs["loom_cell_id"] = counts.obs.loc[bare[found], "loom_cell_id"].to_numpy()
    extra = counts.n_obs - int(found.sum())
    if extra:
        log.info("%d loom cells are not among the QC'd cells and are left out", extra)
    return joined


def loom_to_anndata(loom: str | os.PathLike[str], cells: ad.AnnData | None = None,
                    barcode_key: str | None = "barcode") -> ad.AnnData:
    """Read velocyto's loom; with ``cells``, keep only those cells (see :func:`join_cells`)."""
    counts = read_loom(loom)
    if counts.layers["spliced"].sum() + counts.layers["unspliced"].sum() == 0:
        raise CellfateError("the loom holds no spliced or unspliced counts", loom)
    adata = counts if cells is None else join_cells(counts, cells, barcode_key, source=loom)
    adata.uns["velocyto"] = {"loom": os.path.basename(str(loom)), "n_loom_cells": int(counts.n_obs)}
    log.info("%d cells x %d genes; %d spliced, %d unspliced molecules", adata.n_obs, adata.n_vars,
             int(adata.layers["spliced"].sum()), int(adata.layers["unspliced"].sum()))
    return adata


def loom_to_h5ad(loom_dir: str | os.PathLike[str], sample_id: str, out_h5ad: str | os.PathLike[str],
                 cells_h5ad: str | os.PathLike[str] | None = None, barcode_key: str | None = "barcode") -> None:
    """Rule ``velocity_anndata``: ``<loom_dir>/<sample_id>.loom`` on the QC'd cells -> h5ad."""
    from cellfate.io import write_h5ad

    cells = None
    if cells_h5ad:
        from cellfate.readers import read_h5ad

        cells = read_h5ad(cells_h5ad, what="QC'd cells h5ad", backed="r")
        cells = ad.AnnData(obs=cells.obs.copy(), var=pd.DataFrame(index=cells.var_names))
    adata = loom_to_anndata(os.path.join(loom_dir, f"{sample_id}.loom"), cells, barcode_key)
    adata.uns["velocyto"]["sample_id"] = sample_id
    write_h5ad(adata, out_h5ad)
