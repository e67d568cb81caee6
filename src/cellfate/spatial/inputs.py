"""Spatial inputs as users have them: h5ad files or Space Ranger ``outs/`` folders, several sections.

The spatial stage's contract (what DeepCOLOR and the environment analysis read) is one AnnData
of raw integer counts with ``obsm['spatial']``. This module makes that AnnData from:

- a Space Ranger ``outs/`` folder (Visium): ``filtered_feature_bc_matrix.h5`` (10x HDF5) plus
  ``spatial/tissue_positions.csv`` (or ``tissue_positions_list.csv``), ``scalefactors_json.json``
  and the tissue images, read with scanpy's Visium reader (the scverse one; squidpy's wraps the
  same layout); genes indexed by their Ensembl id (``var['symbol']`` keeps the name), the same
  ids as the harmonised reference;
- an h5ad of spots, or of cells at single-cell resolution (Xenium, MERFISH exports), with
  ``obsm['spatial']``; counts in ``layers['counts']`` or X.

Several sections are put side by side: obs names become ``<section>:<barcode>``, ``obs['section']``
names the section, the original coordinates stay in ``obsm['spatial_section']``, and in
``obsm['spatial']`` each section is shifted right of the previous one by more than the largest
section's extent, so that a nearest-neighbour search (the neighbourhood condition) never crosses
from one section into another. Genes: those every section has, in the first section's order.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellfate.errors import CellfateError
from cellfate.harmonise import check_counts
from cellfate.readers import check_unique, read_h5ad

log = logging.getLogger(__name__)
PathLike = str | os.PathLike[str]

MATRIX = "filtered_feature_bc_matrix.h5"
POSITIONS = ("spatial/tissue_positions.csv", "spatial/tissue_positions_list.csv")
SCALEFACTORS = "spatial/scalefactors_json.json"


def spaceranger_folder(path: PathLike) -> Path | None:
    """The ``outs/`` folder at or below ``path`` that holds the filtered matrix, else None."""
    path = Path(path)
    for folder in (path, path / "outs"):
        if (folder / MATRIX).is_file():
            return folder
    return None


def _check_spaceranger(folder: Path) -> None:
    """Name the missing file in one line before scanpy's reader fails deeper."""
    if not any((folder / p).is_file() for p in POSITIONS):
        raise CellfateError(f"the Space Ranger folder has no {' or '.join(POSITIONS)}", folder)
    if not (folder / SCALEFACTORS).is_file():
        raise CellfateError(f"the Space Ranger folder has no {SCALEFACTORS}", folder)
    for image in ("spatial/tissue_hires_image.png", "spatial/tissue_lowres_image.png"):
        if not (folder / image).is_file():
            raise CellfateError(f"the Space Ranger folder has no {image}", folder)


def read_spaceranger(path: PathLike, section: str) -> ad.AnnData:
    """A Visium ``outs/`` folder as spots AnnData (in-tissue spots, integer counts, Ensembl ids)."""
    import scanpy as sc

    folder = spaceranger_folder(path)
    if folder is None:
        raise CellfateError(f"not a Space Ranger outs/ folder: no {MATRIX}", path)
    _check_spaceranger(folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # scanpy points to squidpy's wrapper of the same reader
            data = sc.read_visium(folder, library_id=section)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - h5py/pandas/imageio fail on a broken folder in many ways
        raise CellfateError(f"not a readable Space Ranger folder: {type(err).__name__}: {err}", folder) from None
    if "in_tissue" in data.obs:
        data = data[data.obs["in_tissue"].astype(int) == 1].copy()
    if "gene_ids" in data.var:
        data.var["symbol"] = data.var_names.astype(str)
        data.var_names = data.var["gene_ids"].astype(str).to_numpy()
    return data


def read_section(path: PathLike, section: str) -> ad.AnnData:
    """One section from a Space Ranger folder or an h5ad with ``obsm['spatial']``, guarded."""
    if Path(path).is_dir():
        data = read_spaceranger(path, section)
    else:
        data = read_h5ad(path, what="spatial h5ad", obsm=("spatial",))
        if "counts" in data.layers:
            data.X = data.layers["counts"]
    counts = check_counts(data.X, path, what="spatial count matrix")
    xy = np.asarray(data.obsm["spatial"], dtype=float)
    if xy.ndim != 2 or xy.shape[1] < 2 or not np.isfinite(xy).all():
        raise CellfateError(f"obsm['spatial'] must be finite x, y coordinates per spot/cell, got shape {xy.shape}", path)
    check_unique(data.obs_names, "spot/cell barcode", path)
    check_unique(data.var_names, "gene", path)
    obs = data.obs.drop(columns=[c for c in ("in_tissue",) if c in data.obs]).copy()
    obs["section"] = section
    obs["barcode"] = data.obs_names.astype(str)
    layers = {k: check_counts(data.layers[k], path, what=f"{k} layer") for k in ("spliced", "unspliced")
              if k in data.layers}  # single-cell sections: the environment analysis needs them
    return ad.AnnData(X=counts, obs=obs, var=data.var.copy(), obsm={"spatial": xy[:, :2]}, layers=layers)


def side_by_side(sections: Mapping[str, ad.AnnData]) -> ad.AnnData:
    """Sections joined into one AnnData (see the module docstring), on the genes all of them have."""
    names = list(sections)
    genes = sections[names[0]].var_names
    for name in names[1:]:
        genes = genes.intersection(sections[name].var_names, sort=False)
    if len(genes) == 0:
        raise CellfateError(f"the spatial sections {names} share no gene id")
    extent = max(float(np.ptp(s.obsm["spatial"][:, 0]) + np.ptp(s.obsm["spatial"][:, 1])) for s in sections.values())
    gap, left, parts = extent + 1.0, 0.0, []
    for name in names:
        part = sections[name][:, genes].copy()
        xy = np.asarray(part.obsm["spatial"], dtype=float)
        part.obsm["spatial_section"] = xy.copy()
        part.obsm["spatial"] = xy + np.array([left - xy[:, 0].min(), -xy[:, 1].min()])
        left += float(np.ptp(xy[:, 0])) + gap
        part.obs_names = [f"{name}:{b}" for b in part.obs_names] if len(names) > 1 else list(part.obs_names)
        parts.append(part)
    joined = ad.concat(parts, join="inner", merge="first") if len(parts) > 1 else parts[0]
    joined.var = parts[0].var.loc[genes].copy()
    log.info("%d sections, %d spots/cells, %d genes", len(names), joined.n_obs, joined.n_vars)
    return joined


def spatial_input(paths: PathLike | Mapping[str, PathLike], out_h5ad: PathLike) -> None:
    """Rule ``spatial_input``: one or several sections (h5ad or Space Ranger folders) -> one h5ad."""
    from cellfate.io import write_h5ad

    if isinstance(paths, (str, os.PathLike)):
        paths = {Path(paths).stem if not Path(paths).is_dir() else "section1": paths}
    sections = {str(name): read_section(path, str(name)) for name, path in paths.items()}
    write_h5ad(side_by_side(sections), out_h5ad)
