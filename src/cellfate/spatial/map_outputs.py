"""DeepCOLOR's post-fit outputs made a block of cells at a time: no cells x spots array is held.

The ``deepcolor`` rule writes p_mat (cells x spots, rows sum to 1) and, from map2sp, the
per-cell totals and entropies and the spot-level type shares, type distributions and imputed
expression. Each of those is a sum over cells or a per-row quantity, so one pass over blocks of
rows makes them all: a block of map2sp is computed, added into the spot-level sums, turned into
p_mat rows and appended to the ``.npy`` on disk. At 50k cells x 10k spots one dense float32 copy
is 2 GB; a block of 4,096 rows is 0.16 GB. The results equal those of the whole-array functions
(:func:`type_shares`, :func:`type_distributions`, :meth:`DeepColor.imputed`) up to the order of
additions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellfate.io import atomic_path
from cellfate.spatial.model import DeepColor, type_indicator

PathLike = str | os.PathLike[str]


@dataclass
class MapSummaries:
    """Everything the rule needs from map2sp besides p_mat itself."""

    map_total: np.ndarray  # per cell: row sum of map2sp
    entropy: np.ndarray  # per cell: entropy of its p_mat row
    type_share: pd.DataFrame  # spots x types, as type_shares(map2sp)
    type_distribution: pd.DataFrame  # spots x types, as type_distributions(p_mat)
    imputed: np.ndarray  # spots x genes, as DeepColor.imputed(zl, map2sp)


def row_entropy(p: np.ndarray) -> np.ndarray:
    """Per row of p, -sum p log p (zeros add nothing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


def write_p_mat(model: DeepColor, features: np.ndarray, zl: np.ndarray, labels: pd.Series | np.ndarray,
                p_mat: PathLike, chunk: int = 4096) -> MapSummaries:
    """Write p_mat to ``p_mat`` (an .npy, atomically) a block of rows at a time; return the rest."""
    types, ind = type_indicator(labels)
    n_cells, n_spots = len(features), len(model.spot_names)
    share = np.zeros((len(types), n_spots))
    dist = np.zeros((len(types), n_spots))
    imputed = np.zeros((n_spots, len(model.genes)))
    total, entropy = np.empty(n_cells), np.empty(n_cells)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (n_cells, n_spots)}
    with atomic_path(p_mat) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for rows, block in model.map2sp_blocks(features, chunk):
            total[rows] = block.sum(1)
            share += ind[rows].T @ block
            imputed += block.T.astype(np.float64) @ model.expression(zl[rows])
            np.divide(block, np.maximum(total[rows], 1e-30)[:, None], out=block)
            dist += ind[rows].T @ block
            entropy[rows] = row_entropy(block)
            handle.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
    dist /= np.maximum(dist.sum(1, keepdims=True), 1e-30)
    return MapSummaries(total, entropy, pd.DataFrame(share.T, columns=types), pd.DataFrame(dist.T, columns=types),
                        (imputed * model.gene_scale()).astype(np.float32))
