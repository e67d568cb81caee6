"""Where cell states fluctuate, and which genes carry the fluctuation toward each fate.

The paper's analysis (pancreas: fluctuation is highest in Ngn3+ endocrine progenitors): take the
top 20% most fluctuating cells, cluster them by their fluctuation profile, and for the clusters
nearest each fate rank genes by their contribution to the fluctuation toward that fate.

"Nearest" counts only clusters still heading to the fate: their mean drift (``X_vicdyf_dl``)
points toward the fate's centroid. A cluster of fluctuating cells already past the centroid (late
cells of that fate, moving on) would otherwise be nearest, and toward the centroid is backwards
for them: the fate's own drivers then rank last. When no cluster heads to a fate, the nearest
is used.

"Contribution toward a fate" is made precise here as follows. Cell i's displacement is
d ~ N(d_scale * drift_i, Sigma_i) with Sigma_i = diag(sigma_i^2) (sigma_i: ``X_vicdyf_diffusion``).
Let e_i be the unit latent direction from z_i to the fate's centroid. The fluctuation along e_i
has standard deviation sqrt(e_i' Sigma_i e_i), and the expected displacement given a fluctuation
of one standard deviation along e_i is w_i = Sigma_i e_i / sqrt(e_i' Sigma_i e_i) (the regression
of d on e_i'd). Gene g's contribution is the expression change this displacement causes,
(J_dec(z_i) w_i)_g, computed exactly by a Jacobian-vector product and averaged over the cluster's
cells: positive when the gene rises as the cell fluctuates toward the fate.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from cellfate.dynamics.model import VICDYF
from cellfate.errors import CellfateError
from cellfate.neighbours import leiden_clusters

log = logging.getLogger(__name__)


def top_fluctuating(fluctuation: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``fraction`` most fluctuating cells (at least two)."""
    if not 0 < fraction <= 1:
        raise CellfateError(f"the top fraction must lie in (0, 1], got {fraction}")
    n_top = max(2, int(round(len(fluctuation) * fraction)))
    order = np.argsort(-np.asarray(fluctuation), kind="stable")
    mask = np.zeros(len(fluctuation), dtype=bool)
    mask[order[:n_top]] = True
    return mask


def cluster_profiles(profiles: np.ndarray, resolution: float = 1.0, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """Leiden clusters of cells by the shape of their per-gene fluctuation (labels "F0", "F1"...).

    Each profile is divided by its mean so that cells group by which genes fluctuate, not by how
    much overall; log1p, PCA and a kNN graph (no dense cell x cell matrix) follow.
    """
    n = len(profiles)
    if n < 3:
        return np.array(["F0"] * n)
    x = np.log1p(profiles / np.maximum(profiles.mean(1, keepdims=True), 1e-12))
    n_comps = max(1, min(20, n - 1, x.shape[1] - 1))
    pcs = PCA(n_components=n_comps, random_state=seed).fit_transform(x - x.mean(0))
    membership = leiden_clusters(pcs, n_neighbors, resolution, seed, n_iterations=2)
    # Number clusters by size (largest first) so the labels do not depend on the graph's order.
    sizes = pd.Series(membership).value_counts()
    relabel = {old: f"F{new}" for new, old in enumerate(sizes.index)}
    return np.array([relabel[m] for m in membership])


def fate_centroids(zl: np.ndarray, labels: pd.Series, fates: list[str], source: str | None = None) -> dict[str, np.ndarray]:
    """Mean latent state of each fate's annotated cells."""
    labels = labels.astype(str)
    centroids = {}
    for fate in fates:
        cells = (labels == fate).to_numpy()
        if not cells.any():
            raise CellfateError(f"no cell is annotated {fate!r} (annotations: {sorted(labels.unique())[:10]})", source)
        centroids[fate] = zl[cells].mean(0)
    return centroids


def contribution_directions(zl: np.ndarray, diffusion: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """w_i = Sigma_i e_i / sqrt(e_i' Sigma_i e_i): the mean displacement per SD of fluctuation toward ``centroid``."""
    e = centroid[None, :] - zl
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    var = diffusion**2
    sigma_e = var * e
    return sigma_e / np.sqrt(np.maximum((e * sigma_e).sum(1, keepdims=True), 1e-30))


def fate_contributions(model: VICDYF, zl: np.ndarray, diffusion: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """Cells x genes: each gene's expression change per SD of fluctuation toward the fate."""
    return model.velocity_along(zl, contribution_directions(zl, diffusion, centroid))


def analyse(model: VICDYF, adata: ad.AnnData, *, fate_key: str, fates: list[str], top_fraction: float = 0.2,
            resolution: float = 1.0, n_neighbors: int = 15, seed: int = 0,
            source: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fluctuation analysis of an annotated AnnData (``model.annotate`` written).

    Returns (genes, clusters): per fate, every gene ranked by its contribution to the fluctuation
    toward that fate within the fluctuation cluster nearest the fate; and the top cells with
    their fluctuation cluster and the fate each cluster was used for.
    """
    for key in ("vicdyf_fluctuation",):
        if key not in adata.layers or key not in adata.obs:
            raise CellfateError(f"no {key!r} in the AnnData: run VICDYF first", source)
    for key in ("X_vicdyf_zl", "X_vicdyf_diffusion", "X_vicdyf_dl"):
        if key not in adata.obsm:
            raise CellfateError(f"no obsm[{key!r}] in the AnnData: run VICDYF first", source)
    if fate_key not in adata.obs:
        raise CellfateError(f"obs has no fate annotation column {fate_key!r} (columns: {list(adata.obs.columns)[:10]})", source)
    if len(fates) < 1:
        raise CellfateError("list at least one fate to rank genes toward", source)
    zl = np.asarray(adata.obsm["X_vicdyf_zl"])
    diffusion = np.asarray(adata.obsm["X_vicdyf_diffusion"])
    fluct = adata.obs["vicdyf_fluctuation"].to_numpy()
    top = top_fluctuating(fluct, top_fraction)
    labels = cluster_profiles(np.asarray(adata.layers["vicdyf_fluctuation"])[top], resolution, n_neighbors, seed)
    log.info("top %.0f%%: %d cells in %d fluctuation clusters", 100 * top_fraction, int(top.sum()), len(set(labels)))
    centroids = fate_centroids(zl, adata.obs[fate_key], fates, source)
    top_idx = np.flatnonzero(top)
    cluster_names = sorted(set(labels), key=lambda c: int(c[1:]))
    cluster_centroids = {c: zl[top_idx[labels == c]].mean(0) for c in cluster_names}
    symbols = adata.var["symbol"].astype(str).to_numpy() if "symbol" in adata.var else np.asarray(adata.var_names)
    tables, used_for = [], {c: [] for c in cluster_names}
    drift = np.asarray(adata.obsm["X_vicdyf_dl"])
    cluster_drift = {c: drift[top_idx[labels == c]].mean(0) for c in cluster_names}
    for fate in fates:
        heading = [c for c in cluster_names if float(cluster_drift[c] @ (centroids[fate] - cluster_centroids[c])) > 0]
        nearest = min(heading or cluster_names, key=lambda c: float(np.linalg.norm(cluster_centroids[c] - centroids[fate])))
        used_for[nearest].append(fate)
        cells = top_idx[labels == nearest]
        score = fate_contributions(model, zl[cells], diffusion[cells], centroids[fate]).mean(0)
        order = np.argsort(-score, kind="stable")
        tables.append(pd.DataFrame({
            "fate": fate, "rank": np.arange(1, len(order) + 1), "gene_id": np.asarray(adata.var_names)[order],
            "symbol": symbols[order], "contribution": score[order], "cluster": nearest, "n_cells": len(cells),
        }))
        log.info("toward %s (cluster %s, %d cells): top genes %s", fate, nearest, len(cells), list(symbols[order[:5]]))
    clusters = pd.DataFrame({
        "cell_id": np.asarray(adata.obs_names)[top_idx], "cluster": labels, "vicdyf_fluctuation": fluct[top_idx],
        "nearest_to_fate": [",".join(used_for[c]) for c in labels],
    })
    return pd.concat(tables, ignore_index=True), clusters
