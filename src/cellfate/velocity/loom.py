"""Spliced/unspliced counts as AnnData on the sample's QC'd cells: a loom, an h5ad, a STARsolo folder.

Users bring the files their tools wrote: velocyto's loom, an h5ad with ``spliced``/``unspliced``
layers (scVelo's datasets, kb-python) or STARsolo's Velocyto folder. All
pass the same guards (:func:`velocity_counts`), so VICDYF sees one shape of input whatever made it.
The loom is read with anndata's maintained loom reader.

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


#: What a velocyto loom must hold, as HDF5 paths, checked before it is read.
LOOM_REQUIRED = ("layers/spliced", "layers/unspliced", "col_attrs/CellID", "row_attrs/Accession", "row_attrs/Gene")


def _check_loom_layout(path: str | os.PathLike[str]) -> None:
    """Refuse a file that is not HDF5 or lacks velocyto's layers and attributes, by name."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            missing = [key for key in LOOM_REQUIRED if key not in handle]
    except OSError as err:
        raise CellfateError(f"not a readable loom ({err})", path) from None
    if missing:
        raise CellfateError(f"the loom lacks {', '.join(missing)}; is it velocyto's output?", path)


def read_loom(path: str | os.PathLike[str]) -> ad.AnnData:
    """All cells and genes of a velocyto loom (read with anndata's loom reader), guarded.

    Genes are indexed by ``Accession`` with the symbol in ``var['symbol']``; cells by the bare
    barcode with velocyto's id in ``obs['loom_cell_id']``; layers checked by :func:`velocity_counts`.
    """
    if not os.path.isfile(path):
        raise CellfateError("the loom does not exist", path)
    _check_loom_layout(path)
    try:
        data = ad.io.read_loom(path, sparse=True, X_name="spliced", obs_names="CellID", var_names="Accession",
                               validate=False)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - loompy/h5py fail on a broken file in many ways
        raise CellfateError(f"not a readable loom: {type(err).__name__}: {err}", path) from None
    data.var = data.var.rename(columns={"Gene": "symbol"}).rename(columns=str.lower)
    data.var.index.name = "gene_id"
    data.obs = pd.DataFrame({"loom_cell_id": data.obs_names.astype(str)}, index=data.obs_names)
    data.layers.pop("matrix", None)
    return velocity_counts(data, path, "loom")


def read_layers_h5ad(path: str | os.PathLike[str]) -> ad.AnnData:
    """An h5ad with ``spliced``/``unspliced`` layers (scVelo's datasets, kb-python, STARsolo), guarded.

    Its obs are kept; the cell id as written goes to ``obs['loom_cell_id']`` and the index becomes
    the bare barcode. A gene symbol column (``symbol``, ``Gene``, ``gene_symbols``) is kept as
    ``var['symbol']``; without one the var names are taken as symbols.
    """
    from cellfate.readers import read_h5ad

    data = read_h5ad(path, what="velocity h5ad", layers=("spliced", "unspliced"))
    data = ad.AnnData(obs=data.obs.copy(), var=data.var.copy(),
                      layers={k: data.layers[k] for k in LAYERS if k in data.layers})
    data.obs["loom_cell_id"] = data.obs_names.astype(str)
    for column in ("symbol", "Gene", "gene_symbols", "gene_symbol", "feature_name"):
        if column in data.var:
            data.var["symbol"] = data.var[column].astype(str)
            break
    else:
        data.var["symbol"] = data.var_names.astype(str)
    return velocity_counts(data, path, "h5ad")


#: STARsolo's Velocyto output (``--soloFeatures Velocyto``): one Matrix Market file per layer.
STARSOLO_FILES = ("barcodes.tsv", "features.tsv", "spliced.mtx", "unspliced.mtx")


def _starsolo_table(folder: str | os.PathLike[str], name: str) -> pd.DataFrame:
    path = os.path.join(folder, name)
    if not os.path.isfile(path) and os.path.isfile(path + ".gz"):
        path += ".gz"
    try:
        return pd.read_csv(path, sep="\t", header=None, dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise CellfateError(f"not a readable STARsolo {name} ({err})", folder) from None


def read_starsolo(folder: str | os.PathLike[str]) -> ad.AnnData:
    """STARsolo's ``Solo.out/Velocyto/filtered`` (or ``raw``) folder: genes x cells Matrix Market
    files ``spliced``/``unspliced``/``ambiguous`` with ``features.tsv`` (id, symbol) and
    ``barcodes.tsv``; guarded like the other kinds (:func:`velocity_counts`)."""
    import scipy.io

    missing = [f for f in STARSOLO_FILES if not any(os.path.isfile(os.path.join(folder, f + z)) for z in ("", ".gz"))]
    if missing:
        raise CellfateError(f"not a STARsolo Velocyto folder: no {', '.join(missing)}", folder)
    features, barcodes = _starsolo_table(folder, "features.tsv"), _starsolo_table(folder, "barcodes.tsv")
    layers = {}
    for name in LAYERS:
        path = next((os.path.join(folder, f"{name}.mtx{z}") for z in ("", ".gz")
                     if os.path.isfile(os.path.join(folder, f"{name}.mtx{z}"))), None)
        if path is None:
            continue
        try:
            matrix = sp.csr_matrix(scipy.io.mmread(path).T)
        except (OSError, ValueError) as err:
            raise CellfateError(f"not a readable Matrix Market file {name}.mtx ({err})", folder) from None
        if matrix.shape != (len(barcodes), len(features)):
            raise CellfateError(f"{name}.mtx is {matrix.shape[::-1]} (genes x cells) but features.tsv and barcodes.tsv "
                                f"list {len(features)} x {len(barcodes)}", folder)
        layers[name] = matrix
    var = pd.DataFrame({"symbol": features[1] if features.shape[1] > 1 else features[0]}, dtype=str)
    var.index = pd.Index(features[0].to_numpy(), name="gene_id")
    obs = pd.DataFrame({"loom_cell_id": barcodes[0].to_numpy()}, index=barcodes[0].to_numpy())
    return velocity_counts(ad.AnnData(obs=obs, var=var, layers=layers), folder, "STARsolo folder")


def velocity_counts(data: ad.AnnData, path: str | os.PathLike[str], what: str) -> ad.AnnData:
    """The same guards for every source of counts: integer layers of one shape, unique names.

    Layers become CSR int32 (float noise within the intake's tolerance rounded, anything else
    refused), X is the spliced layer, and cells are indexed by their bare barcode: two cells with
    one barcode, or a gene listed twice, would be silently mixed by the join to the QC'd cells.
    """
    from cellfate.harmonise import check_counts
    from cellfate.readers import check_unique

    for name in ("spliced", "unspliced"):
        if name not in data.layers:
            raise CellfateError(f"the {what} has no {name!r} layer", path)
    layers = {}
    for name in LAYERS:
        if name in data.layers:
            if data.layers[name].shape != data.shape:
                raise CellfateError(f"the {what}'s {name} layer is {data.layers[name].shape}, not {data.shape}", path)
            layers[name] = check_counts(data.layers[name], path, what=f"{name} layer")
    check_unique(data.var_names, "gene", path)
    obs = data.obs.copy()
    obs.index = pd.Index([bare_barcode(c) for c in obs["loom_cell_id"]],
                         name=None if "barcode" in obs else "barcode")
    check_unique(obs.index, "barcode", path)
    return ad.AnnData(X=layers["spliced"].copy(), obs=obs, var=data.var.copy(), layers=layers)


def join_cells(counts: ad.AnnData, cells: ad.AnnData, barcode_key: str | None = "barcode",
               source: str | os.PathLike[str] | None = None, what: str = "loom") -> ad.AnnData:
    """The counts on the QC'd ``cells``, in their order, with their obs and obs_names.

    ``barcode_key`` names the obs column of ``cells`` holding the barcode; None (or a column that
    is absent) uses ``cells.obs_names``. QC'd cells without spliced/unspliced counts are dropped
    with a warning; none in common is an error.
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
            f"no QC'd cell is in the {what} (QC'd e.g. {list(bare[:2])}, {what} e.g. {list(counts.obs_names[:2])})",
            source,
        )
    if not found.all():
        log.warning("%d of %d QC'd cells have no spliced/unspliced counts and are dropped",
                    int((~found).sum()), len(found))
    joined = counts[bare[found]].copy()
    joined.obs = cells.obs.loc[found].copy()
    joined.obs["loom_cell_id"] = counts.obs.loc[bare[found], "loom_cell_id"].to_numpy()
    extra = counts.n_obs - int(found.sum())
    if extra:
        log.info("%d %s cells are not among the QC'd cells and are left out", extra, what)
    return joined


#: The readers of each kind of spliced/unspliced file a velocity sample may give.
READERS = {"loom": read_loom, "h5ad": read_layers_h5ad, "starsolo": read_starsolo}


def counts_to_anndata(path: str | os.PathLike[str], kind: str = "loom", cells: ad.AnnData | None = None,
                      barcode_key: str | None = "barcode") -> ad.AnnData:
    """Read a loom or layered h5ad; with ``cells``, keep only those cells (see :func:`join_cells`)."""
    counts = READERS[kind](path)
    if counts.layers["spliced"].sum() + counts.layers["unspliced"].sum() == 0:
        raise CellfateError(f"the {kind} holds no spliced or unspliced counts", path)
    adata = counts if cells is None else join_cells(counts, cells, barcode_key, source=path, what=kind)
    adata.uns["velocyto"] = {kind: os.path.basename(str(path)), "n_loom_cells": int(counts.n_obs)}
    log.info("%d cells x %d genes; %d spliced, %d unspliced molecules", adata.n_obs, adata.n_vars,
             int(adata.layers["spliced"].sum()), int(adata.layers["unspliced"].sum()))
    return adata


def loom_to_anndata(loom: str | os.PathLike[str], cells: ad.AnnData | None = None,
                    barcode_key: str | None = "barcode") -> ad.AnnData:
    """Read velocyto's loom; with ``cells``, keep only those cells (see :func:`join_cells`)."""
    return counts_to_anndata(loom, "loom", cells, barcode_key)


def _qc_cells(cells_h5ad: str | os.PathLike[str] | None) -> ad.AnnData | None:
    """The QC'd cells' obs (and var names), read backed: their matrix is not needed."""
    if not cells_h5ad:
        return None
    from cellfate.readers import read_h5ad

    cells = read_h5ad(cells_h5ad, what="QC'd cells h5ad", backed="r")
    return ad.AnnData(obs=cells.obs.copy(), var=pd.DataFrame(index=cells.var_names))


def counts_to_h5ad(path: str | os.PathLike[str], kind: str, sample_id: str, out_h5ad: str | os.PathLike[str],
                   cells_h5ad: str | os.PathLike[str] | None = None, barcode_key: str | None = "barcode") -> None:
    """Rule ``velocity_anndata`` for a sample given as a loom or h5ad: on the QC'd cells -> h5ad."""
    from cellfate.io import write_h5ad

    if kind not in READERS:
        raise CellfateError(f"unknown kind of spliced/unspliced file {kind!r} (loom, h5ad or starsolo)", path)
    adata = counts_to_anndata(path, kind, _qc_cells(cells_h5ad), barcode_key)
    adata.uns["velocyto"]["sample_id"] = sample_id
    write_h5ad(adata, out_h5ad)


def loom_to_h5ad(loom_dir: str | os.PathLike[str], sample_id: str, out_h5ad: str | os.PathLike[str],
                 cells_h5ad: str | os.PathLike[str] | None = None, barcode_key: str | None = "barcode") -> None:
    """Rule ``velocity_anndata`` after velocyto: ``<loom_dir>/<sample_id>.loom`` on the QC'd cells -> h5ad."""
    counts_to_h5ad(os.path.join(loom_dir, f"{sample_id}.loom"), "loom", sample_id, out_h5ad, cells_h5ad, barcode_key)
