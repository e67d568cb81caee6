"""QC and corpus figures: what each filter removed, and what the corpus holds."""

from __future__ import annotations

import os
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from cellfate.plotting.style import PALETTE, plt, save


def qc_metrics_figure(qc_h5ads: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str]) -> None:
    """Per sample: violins of counts, genes and mitochondrial %, and counts vs genes coloured by QC outcome."""
    obs = pd.concat([ad.read_h5ad(p, backed="r").obs for p in qc_h5ads], ignore_index=True)
    obs["label"] = obs["source"].astype(str) + "\n" + obs["sample"].astype(str).str.slice(0, 20)
    labels = list(dict.fromkeys(obs["label"]))
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    for ax, (column, title, log) in zip(axes[:3], [("n_counts", "UMIs per cell", True), ("n_genes", "genes per cell", True), ("pct_mito", "mitochondrial %", False)]):
        data = [obs.loc[obs["label"] == lab, column].to_numpy() for lab in labels]
        data = [np.log10(np.maximum(d, 1)) if log else d for d in data]
        ax.violinplot(data, showmedians=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=6, rotation=60)
        ax.set_title(title + (" (log10)" if log else ""))
    reasons = [r for r in obs["qc_fail"].cat.categories]
    for k, reason in enumerate(reasons):
        sel = obs["qc_fail"] == reason
        axes[3].scatter(obs.loc[sel, "n_counts"], obs.loc[sel, "n_genes"], s=3, color=PALETTE[k % 10], label=reason or "pass")
    axes[3].set_xscale("log")
    axes[3].set_yscale("log")
    axes[3].set_xlabel("UMIs")
    axes[3].set_ylabel("genes")
    axes[3].legend(markerscale=4, fontsize=7)
    axes[3].set_title("QC outcome")
    save(fig, path)


def corpus_summary_figure(composition: str | os.PathLike[str], summary: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Cells that passed QC by source, tissue and cell type; cells kept per sample."""
    cells = pd.read_csv(composition, sep="\t")
    table = pd.read_csv(summary, sep="\t")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    by_source = cells.pivot_table(index="source", columns="cell_type", values="cells", aggfunc="sum", fill_value=0)
    by_source.plot.barh(stacked=True, ax=axes[0], color=PALETTE, legend=False)
    axes[0].set_title("cells by source and cell type")
    by_tissue = cells.pivot_table(index="tissue", columns="cell_type", values="cells", aggfunc="sum", fill_value=0)
    by_tissue.plot.barh(stacked=True, ax=axes[1], color=PALETTE)
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.0, 1.0))
    axes[1].set_title("cells by tissue and cell type")
    labels = table["source"] + ": " + table["sample"].astype(str).str.slice(0, 20)
    axes[2].barh(labels, table["cells"], color="lightgray", label="cells")
    axes[2].barh(labels, table["cells_pass"], color=PALETTE[0], label="pass QC")
    axes[2].tick_params(axis="y", labelsize=7)
    axes[2].legend()
    axes[2].set_title("cells kept per sample")
    for ax in axes:
        ax.set_xlabel("cells")
        ax.set_ylabel("")
    save(fig, path)
