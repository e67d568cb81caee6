"""Figures of the dynamics stage (VICDYF): fluctuation, velocity stream, fate genes, validation."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from cellfate.plotting.style import PALETTE, plt, save


def _scatter_categories(ax, xy: np.ndarray, labels: pd.Series, size: float = 6, alpha: float = 0.8) -> None:
    labels = labels.astype(str)
    for k, name in enumerate(sorted(labels.unique())):
        sel = (labels == name).to_numpy()
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=PALETTE[k % len(PALETTE)], label=name, alpha=alpha, lw=0)
    ax.legend(markerscale=2, fontsize=7, loc="best", framealpha=0.8)


def _clean(ax, title: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title, fontsize=10)


def fluctuation_umap(dynamics_h5ad: str | os.PathLike[str], clusters_tsv: str | os.PathLike[str],
                     path: str | os.PathLike[str], fate_key: str | None = None) -> None:
    """UMAP of the latent states: fluctuation per cell, the top cells' fluctuation clusters, fates."""
    adata = ad.read_h5ad(dynamics_h5ad)
    clusters = pd.read_csv(clusters_tsv, sep="\t", dtype={"cell_id": str})
    xy = adata.obsm["X_vicdyf_umap"]
    panels = 3 if fate_key and fate_key in adata.obs else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2))
    order = np.argsort(adata.obs["vicdyf_fluctuation"].to_numpy())
    sc = axes[0].scatter(xy[order, 0], xy[order, 1], c=adata.obs["vicdyf_fluctuation"].to_numpy()[order], s=7,
                         cmap="magma", lw=0)
    fig.colorbar(sc, ax=axes[0], label="fluctuation (gene mean)")
    _clean(axes[0], "VICDYF fluctuation")
    axes[1].scatter(xy[:, 0], xy[:, 1], s=5, color="0.85", lw=0)
    top = pd.Series(clusters["cluster"].to_numpy(), index=clusters["cell_id"])
    pos = adata.obs_names.get_indexer(top.index)
    labels = top.astype(str) + np.where(clusters["nearest_to_fate"].fillna("").to_numpy() != "",
                                        " (→" + clusters["nearest_to_fate"].fillna("").astype(str).to_numpy() + ")", "")
    _scatter_categories(axes[1], xy[pos], pd.Series(labels.to_numpy()), size=9)
    _clean(axes[1], f"top {len(top)} fluctuating cells by cluster")
    if panels == 3:
        _scatter_categories(axes[2], xy, adata.obs[fate_key])
        _clean(axes[2], f"annotation: {fate_key}")
    save(fig, path)


def grid_velocity(xy: np.ndarray, arrows: np.ndarray, n_grid: int = 30, n_neighbors: int = 20) -> tuple[np.ndarray, ...]:
    """Arrows averaged onto a regular grid (Gaussian weights over each grid point's nearest cells).

    Grid points far from every cell are masked, so streamlines stay where the cells are.
    """
    lo, hi = xy.min(0), xy.max(0)
    pad = 0.05 * (hi - lo)
    gx = np.linspace(lo[0] - pad[0], hi[0] + pad[0], n_grid)
    gy = np.linspace(lo[1] - pad[1], hi[1] + pad[1], n_grid)
    points = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)
    k = min(n_neighbors, len(xy))
    dist, idx = cKDTree(xy).query(points, k=k)
    scale = np.mean(hi - lo) / n_grid * 1.5
    weights = np.exp(-0.5 * (dist / scale) ** 2)
    total = weights.sum(1)
    vel = (weights[:, :, None] * arrows[idx]).sum(1) / np.maximum(total, 1e-12)[:, None]
    mask = dist[:, 0] > 2 * scale  # no cell nearby
    vel[mask] = np.nan
    return gx, gy, vel[:, 0].reshape(n_grid, n_grid), vel[:, 1].reshape(n_grid, n_grid)


def velocity_stream(dynamics_h5ad: str | os.PathLike[str], path: str | os.PathLike[str],
                    color_key: str | None = None) -> None:
    """The expected dynamics (X_vicdyf_mdumap) as streamlines on the UMAP of latent states."""
    adata = ad.read_h5ad(dynamics_h5ad)
    xy = adata.obsm["X_vicdyf_umap"]
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    if color_key and color_key in adata.obs:
        _scatter_categories(ax, xy, adata.obs[color_key], size=8, alpha=0.5)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=8, color="0.7", lw=0)
    gx, gy, vx, vy = grid_velocity(xy, adata.obsm["X_vicdyf_mdumap"])
    speed = np.sqrt(vx**2 + vy**2)
    ax.streamplot(gx, gy, vx, vy, color="k", density=1.2, linewidth=0.4 + 1.6 * np.nan_to_num(speed / np.nanmax(speed)),
                  arrowsize=1.0)
    _clean(ax, "VICDYF velocity (expected dynamics)")
    save(fig, path)


def fluctuation_genes(genes_tsv: str | os.PathLike[str], path: str | os.PathLike[str], n_top: int = 15) -> None:
    """Per fate, the genes contributing most to the fluctuation toward it."""
    genes = pd.read_csv(genes_tsv, sep="\t")
    fates = list(dict.fromkeys(genes["fate"]))
    fig, axes = plt.subplots(1, len(fates), figsize=(4.2 * len(fates), 0.28 * n_top + 1.4), squeeze=False)
    for k, (ax, fate) in enumerate(zip(axes[0], fates)):
        table = genes[genes["fate"] == fate].nsmallest(n_top, "rank")
        ax.barh(np.arange(len(table))[::-1], table["contribution"], color=PALETTE[k % len(PALETTE)])
        ax.set_yticks(np.arange(len(table))[::-1], [f"{r}. {s}" for r, s in zip(table["rank"], table["symbol"])], fontsize=8)
        ax.set_xlabel("contribution to fluctuation toward fate")
        ax.set_title(f"toward {fate} (cluster {table['cluster'].iloc[0]}, {table['n_cells'].iloc[0]} cells)", fontsize=10)
    save(fig, path)


def validation(dynamics_h5ad: str | os.PathLike[str], truth_h5ad: str | os.PathLike[str],
               validation_tsv: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Against the simulated truth: velocity cosine and fluctuation along pseudotime, driver ranks."""
    from cellfate.dynamics.validation import estimated_count_velocity, velocity_cosine

    adata = ad.read_h5ad(dynamics_h5ad)
    truth = ad.read_h5ad(truth_h5ad)[adata.obs_names, adata.var_names]
    table = pd.read_csv(validation_tsv, sep="\t")
    values = table.set_index("metric")["value"]
    pt = truth.obs["pseudotime"].to_numpy()
    branch = float(truth.uns["simulation"]["branch_time"])
    cos = velocity_cosine(estimated_count_velocity(adata), np.asarray(truth.layers["true_velocity"]))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    colors = [PALETTE[k] for k in truth.obs["branch"].cat.codes]
    axes[0].scatter(pt, cos, s=6, c=colors, lw=0)
    axes[0].axhline(0, color="0.6", lw=0.8)
    axes[0].set_ylim(-1.05, 1.05)
    axes[0].set_title(f"velocity vs truth: mean cosine {values['velocity_cosine_mean']:.2f}", fontsize=10)
    axes[0].set_ylabel("cos(estimated, true ds/dt)")
    axes[1].scatter(pt, adata.obs["vicdyf_fluctuation"], s=6, c=colors, lw=0)
    axes[1].set_title(f"fluctuation: {values['fluctuation_branch_ratio']:.2f}x just past the branch point", fontsize=10)
    axes[1].set_ylabel("fluctuation (gene mean)")
    for ax in axes[:2]:
        ax.axvline(branch, color="k", ls="--", lw=0.8)
        ax.axvspan(branch, branch + 0.2, color="0.9", zorder=0)
        ax.set_xlabel("true pseudotime")
    for k, name in enumerate(truth.obs["branch"].cat.categories):
        axes[0].scatter([], [], color=PALETTE[k], label=name)
    axes[0].legend(fontsize=7, markerscale=2)
    ranks = table[table["metric"].str.startswith("driver_rank:")]
    parts = ranks["metric"].str.split(":", expand=True)
    n_genes = adata.n_vars
    for k, fate in enumerate(dict.fromkeys(parts[1])):
        sel = (parts[1] == fate).to_numpy()
        r = ranks["value"].to_numpy()[sel]
        axes[2].scatter(r, np.full(len(r), k) + np.linspace(-0.2, 0.2, len(r)), color=PALETTE[k + 1], s=18)
    fates = list(dict.fromkeys(parts[1]))
    axes[2].set_yticks(range(len(fates)), [f"{f} drivers" for f in fates])
    axes[2].set_xlim(0, n_genes + 1)
    axes[2].set_xlabel(f"rank toward own fate (of {n_genes} genes)")
    axes[2].set_title(f"fate drivers: median rank fraction {values['driver_median_rank_fraction']:.2f}", fontsize=10)
    save(fig, path)


def crosscheck(table_tsv: str | os.PathLike[str], path: str | os.PathLike[str], score: str = "raw") -> None:
    """Per simulator: velocity cosine with the truth, and where the fluctuation peaks against the branch.

    Shows the unnormalised per-cell fluctuation (obs ``vicdyf_fluctuation``, score ``raw``): the
    branch window [branch, branch + 0.15] is shaded, the peak is a dot, its ratio is written.
    """
    table = pd.read_csv(table_tsv, sep="\t")
    sims = list(dict.fromkeys(table["simulator"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 * len(sims) + 1.8))
    cos = table.groupby("simulator", sort=False)["velocity_cosine"]
    y = np.arange(len(sims))
    axes[0].barh(y, cos.mean().reindex(sims), xerr=cos.std().reindex(sims).fillna(0), color=PALETTE[0])
    axes[0].axvline(0.4, color="grey", ls="--", lw=1)
    axes[0].set(yticks=y, yticklabels=sims, xlabel="velocity cosine with the true ds/dt", xlim=(0, 1))
    for k, sim in enumerate(sims):
        rows = table[table["simulator"] == sim]
        branch = float(rows["branch_time"].mean())
        axes[1].axvspan(branch, branch + 0.15, ymin=(k + 0.1) / len(sims), ymax=(k + 0.9) / len(sims),
                        color=PALETTE[1], alpha=0.25)
        axes[1].scatter(rows[f"{score}:peak"], np.full(len(rows), k), color="black", s=18, zorder=3)
        axes[1].text(1.02, k, f"ratio {rows[f'{score}:ratio'].mean():.2f}", va="center", fontsize=8)
    axes[1].set(yticks=y, yticklabels=[""] * len(sims), ylim=(-0.5, len(sims) - 0.5), xlim=(0, 1),
                xlabel="pseudotime: fluctuation peak (dot), branch window (shaded)")
    axes[0].set_ylim(-0.5, len(sims) - 0.5)
    fig.suptitle("VICDYF on simulators it was not designed on (_linear: no branch)", fontsize=10)
    save(fig, path)
