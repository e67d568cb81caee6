"""Overview figures of the demo's simulated inputs, so a user sees the truth the stages recover."""

from __future__ import annotations

import os
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from cellfate.plotting.style import PALETTE, plt, save


def corpus_composition(truth_tables: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str]) -> None:
    """Cells per sample by true cell type, and the planted QC defects and duplicates."""
    frames = []
    for table in truth_tables:
        frame = pd.read_csv(table, sep="\t", keep_default_na=False)
        frame["sample"] = f"{os.path.basename(os.path.dirname(table))}\n{os.path.basename(table).removesuffix('.tsv')}"
        frames.append(frame)
    truth = pd.concat(frames)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    pd.crosstab(truth["sample"], truth["cell_type"]).plot.barh(stacked=True, ax=left, color=PALETTE)
    left.set_xlabel("cells")
    left.set_ylabel("")
    left.tick_params(axis="y", labelsize=7)
    left.legend(fontsize=7, loc="lower right")
    left.set_title("simulated corpus: true cell types")
    defects = truth.assign(duplicate=truth["sim_duplicate_of"] != "")
    table = pd.crosstab(defects["sample"], defects["sim_quality"]).drop(columns="ok", errors="ignore")
    table["duplicate"] = defects.groupby("sample")["duplicate"].sum()
    table.plot.barh(ax=right, color=PALETTE[3:])
    right.set_xlabel("cells")
    right.set_yticklabels([])
    right.set_ylabel("")
    right.set_title("planted defects")
    save(fig, path)


def bifurcation_overview(truth_h5ad: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """PCA of the spliced counts coloured by true pseudotime and branch, and one driver's phase portrait."""
    adata = ad.read_h5ad(truth_h5ad)
    x = np.log1p(np.asarray(adata.layers["spliced"], dtype=float))
    x -= x.mean(0)
    pcs = x @ np.linalg.svd(x, full_matrices=False)[2][:2].T
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    sc = axes[0].scatter(pcs[:, 0], pcs[:, 1], c=adata.obs["pseudotime"], s=6, cmap="viridis")
    fig.colorbar(sc, ax=axes[0], label="true pseudotime")
    for k, name in enumerate(adata.obs["branch"].cat.categories):
        sel = (adata.obs["branch"] == name).to_numpy()
        axes[1].scatter(pcs[sel, 0], pcs[sel, 1], s=6, color=PALETTE[k], label=name)
    axes[1].legend(markerscale=3)
    for ax in axes[:2]:
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
    axes[0].set_title("simulated differentiation")
    axes[1].set_title("true branch")
    gene = int(np.flatnonzero(adata.var["fate_driver"] == "alpha")[0])
    for k, name in enumerate(adata.obs["branch"].cat.categories):
        sel = (adata.obs["branch"] == name).to_numpy()
        axes[2].scatter(adata.layers["true_spliced"][sel, gene], adata.layers["true_unspliced"][sel, gene], s=6, color=PALETTE[k], label=name)
    axes[2].set_xlabel("spliced (expected)")
    axes[2].set_ylabel("unspliced (expected)")
    axes[2].set_title(f"phase portrait of {adata.var['symbol'].iloc[gene]} (alpha driver)")
    save(fig, path)


def tissue_overview(spots_h5ad: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """True domains, true abundance of each type on the grid, and the true type-pair colocalization."""
    spots = ad.read_h5ad(spots_h5ad)
    xy = spots.obsm["spatial"]
    types = list(spots.uns["cell_types"])
    abundance = spots.obsm["true_abundance"]
    n = len(types) + 2
    cols = 4
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows))
    axes = axes.ravel()
    codes = spots.obs["domain"].cat.codes.to_numpy()
    axes[0].scatter(xy[:, 0], xy[:, 1], c=[PALETTE[c] for c in codes], s=18, marker="s")
    for k, name in enumerate(spots.obs["domain"].cat.categories):
        axes[0].scatter([], [], color=PALETTE[k], marker="s", label=name)
    axes[0].legend(fontsize=7, loc="upper right", framealpha=0.9)
    axes[0].set_title("true spatial domains", fontsize=9)
    for k, name in enumerate(types):
        axes[k + 1].scatter(xy[:, 0], xy[:, 1], c=abundance[:, k], s=18, marker="s", cmap="magma")
        axes[k + 1].set_title(f"{name} (cells per spot)", fontsize=9)
    heat = axes[len(types) + 1]
    im = heat.imshow(spots.uns["true_pair_colocalization"], cmap="RdBu_r", vmin=-4, vmax=4)
    heat.set_xticks(range(len(types)), types, rotation=90, fontsize=7)
    heat.set_yticks(range(len(types)), types, fontsize=7)
    heat.set_title("true colocalization (log2)", fontsize=9)
    fig.colorbar(im, ax=heat)
    for ax in axes[: len(types) + 1]:
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.axis("off")
    save(fig, path)
