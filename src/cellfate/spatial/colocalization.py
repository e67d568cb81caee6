"""Colocalization of cells from their spatial distributions, without a cells x cells matrix.

For cells i, j with distributions P_i, P_j over the spots, C_ij = log2(sum_s P_is P_js) +
log2(n_spots): the log2 ratio of their overlap to that of two uniform distributions. The
original keeps the dense N x N matrix; here edges (C > threshold between different types) are
found block by block, over a seeded sample of cells when there are more than ``max_cells``, and
the type-level matrix is computed exactly from per-type sums: the mean over pairs of the ratio
n_spots * P_i . P_j is n_spots * (sum_A P) . (sum_B P) / (|A| |B|), so no pair is ever listed.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cellfate.spatial.model import type_indicator

log = logging.getLogger(__name__)


def pair_scores(p_mat: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    """C_ij for the listed pairs (any number, computed in chunks)."""
    n_spots = p_mat.shape[1]
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        a = np.asarray(p_mat[i[s:s + chunk]], dtype=np.float64)
        b = np.asarray(p_mat[j[s:s + chunk]], dtype=np.float64)
        out[s:s + chunk] = np.log2(np.maximum((a * b).sum(1), 1e-300)) + np.log2(n_spots)
    return out


def sample_cells(n: int, max_cells: int | None, seed: int) -> np.ndarray:
    """All cells, or a seeded sorted sample of ``max_cells`` of them."""
    if max_cells is None or n <= max_cells:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_cells, replace=False))


def colocalization_edges(p_mat: np.ndarray, cell_names: pd.Index, labels: np.ndarray, threshold: float = 1.0,
                         max_cells: int | None = 5000, seed: int = 0, memory_mb: int = 256) -> pd.DataFrame:
    """Pairs of cells of different types with C_ij > ``threshold``, computed in row blocks.

    ``p_mat`` may be a memory-mapped array: only ``block x n`` scores are held at a time.
    Returns cell_i, cell_j (i before j), type_i, type_j and score.
    """
    labels = np.asarray(labels, dtype=str)
    keep = sample_cells(len(labels), max_cells, seed)
    if len(keep) < len(labels):
        log.info("colocalization edges on a sample of %d of %d cells", len(keep), len(labels))
    p = np.asarray(p_mat[keep], dtype=np.float32)
    lab = labels[keep]
    codes = pd.Categorical(lab).codes
    n, n_spots = p.shape
    log_n = np.log2(n_spots)
    block = max(1, min(n, memory_mb * 2**20 // (4 * max(n, 1))))
    rows, cols, scores = [], [], []
    for start in tqdm(range(0, n, block), desc="colocalization edges", mininterval=2.0, leave=False):
        stop = min(start + block, n)
        overlap = p[start:stop] @ p[start:].T  # pairs (i, j >= start); keep j > i below
        with np.errstate(divide="ignore"):
            score = np.log2(overlap) + log_n
        score[np.arange(stop - start), np.arange(stop - start)] = -np.inf
        score[np.tril_indices(stop - start, k=-1, m=n - start)] = -np.inf
        hit = (score > threshold) & (codes[start:stop, None] != codes[None, start:])
        r, c = np.nonzero(hit)
        rows.append(r + start)
        cols.append(c + start)
        scores.append(score[r, c])
    r, c, s = (np.concatenate(v) if v else np.empty(0) for v in (rows, cols, scores))
    r, c = r.astype(int), c.astype(int)
    names = np.asarray(cell_names)[keep]
    edges = pd.DataFrame({"cell_i": names[r], "cell_j": names[c], "type_i": lab[r], "type_j": lab[c],
                          "score": s.astype(np.float32)})
    log.info("%d colocalization edges (C > %g, different types) among %d cells", len(edges), threshold, n)
    return edges


def least_mapped(map_total: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the cells to keep: drops the ``fraction`` with the smallest total mapping weight."""
    if fraction <= 0:
        return np.ones(len(map_total), dtype=bool)
    return map_total > np.quantile(map_total, fraction)


def type_colocalization(p_mat: np.ndarray, labels: np.ndarray, map_total: np.ndarray | None = None,
                        drop_fraction: float = 0.05, chunk: int = 8192) -> pd.DataFrame:
    """Types x types log2 of the mean per-pair overlap ratio (pairs of distinct cells).

    The least-mapped ``drop_fraction`` of cells (smallest row total of map2sp) are left out first:
    cells the map barely places carry near-uniform distributions that blur every pair.
    """
    labels = np.asarray(labels, dtype=str)
    keep = least_mapped(map_total, drop_fraction) if map_total is not None else np.ones(len(labels), bool)
    types, ind = type_indicator(labels[keep])
    idx = np.flatnonzero(keep)
    n_spots = p_mat.shape[1]
    sums = np.zeros((len(types), n_spots))
    self_overlap = np.zeros(len(types))
    for s in range(0, len(idx), chunk):
        block = np.asarray(p_mat[idx[s:s + chunk]], dtype=np.float64)
        part = ind[s:s + chunk]
        sums += part.T @ block
        self_overlap += part.T @ (block * block).sum(1)
    counts = np.asarray(ind.sum(0)).ravel()
    total = sums @ sums.T
    pairs = np.outer(counts, counts).astype(float)
    np.fill_diagonal(total, np.diag(total) - self_overlap)  # a cell is not its own partner
    np.fill_diagonal(pairs, counts * (counts - 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = n_spots * total / pairs
        matrix = np.log2(ratio)
    return pd.DataFrame(matrix, index=pd.Index(types, name="cell_type"), columns=types)
