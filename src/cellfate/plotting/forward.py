"""Figures of the forward analysis (:mod:`cellfate.spatial.forward_pipeline`)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from cellfate.plotting.style import PALETTE, plt, save

PathLike = str | os.PathLike[str]


def forward_shifts(table_tsv: PathLike, path: PathLike) -> None:
    """Predicted change of the first fate's share per intervention, with its bootstrap interval,
    and the true change where the tissue is simulated."""
    table = pd.read_csv(table_tsv, sep="\t")
    fate = table["fate"].iloc[0] if len(table) else "?"
    rows = table[table["fate"] == fate].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.6 * max(len(rows), 2) + 1.5))
    y = np.arange(len(rows))[::-1]
    ax.errorbar(rows["shift"], y, xerr=[rows["shift"] - rows["low"], rows["high"] - rows["shift"]], fmt="o",
                color=PALETTE[0], capsize=3, label="predicted (bootstrap interval)")
    if "true_shift" in rows:
        ax.scatter(rows["true_shift"], y, marker="x", s=60, color=PALETTE[3], zorder=3, label="simulated truth")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_yticks(y, rows["intervention"], fontsize=8)
    ax.set_xlabel(f"change in the tissue's share of fate {fate}")
    base = rows["predicted_share"].iloc[0] if len(rows) else np.nan
    ax.set_title(f"forward simulation from the progenitors (untreated share {base:.2f})", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    save(fig, path)


def forward_decomposition(cells_tsv: PathLike, path: PathLike) -> None:
    """The lineage on its latent layout: progenitors coloured by their fate probability and by the
    environment's share of their fate uncertainty."""
    cells = pd.read_csv(cells_tsv, sep="\t")
    prog = cells[cells["is_progenitor"].astype(bool)]
    p_col = next((c for c in cells.columns if c.startswith("p_")), None)
    panels = [(p_col, "fate probability " + (p_col or "")[2:], "coolwarm")]
    if "environmental_share" in cells:
        panels += [("environmental_share", "environmental share of fate uncertainty", "viridis"),
                   ("intrinsic_entropy", "intrinsic fate entropy (bits)", "magma")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (col, title, cmap) in zip(axes[0], panels):
        ax.scatter(cells["umap1"], cells["umap2"], s=4, color="lightgrey", label="lineage")
        if col is not None and col in prog:
            points = ax.scatter(prog["umap1"], prog["umap2"], s=8, c=prog[col], cmap=cmap)
            fig.colorbar(points, ax=ax, shrink=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    save(fig, path)
