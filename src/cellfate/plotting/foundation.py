"""Figures of the model in use: classification, embeddings, perturbation screens, human cells.

Only tables and h5ad files are read (no model, no torch), so the figures run in the figures env.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from scipy import stats

from cellfate.plotting.style import PALETTE, plt, save

METHOD_TITLES = {
    "cellfate_finetuned": "fine-tuned model",
    "baseline_logreg_pca": "baseline: logistic regression on PCA",
    "knn_frozen_embeddings": "zero-shot: kNN on frozen embeddings",
}
HOMOLOGY_COLOURS = {
    "one2one": PALETTE[2],
    "one2many": PALETTE[1],
    "many2many": PALETTE[3],
    "no_ortholog": PALETTE[7],
    "ambiguous_symbol": PALETTE[4],
    "not_in_table": PALETTE[5],
}


def _confusion(ax, truth: pd.Series, predicted: pd.Series, title: str, classes: Sequence[str] | None = None) -> None:
    """Row-normalised confusion matrix (true types as rows) with the cell counts written in."""
    rows = list(classes or sorted(set(truth)))
    cols = list(dict.fromkeys(rows + sorted(set(predicted) - set(rows))))
    counts = pd.crosstab(pd.Categorical(truth, rows), pd.Categorical(predicted, cols), dropna=False).to_numpy()
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(share.shape[0]):
        for j in range(share.shape[1]):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black",
                )
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)


def classifier_confusion(
    predictions_tsv: str | os.PathLike[str], metrics_tsv: str | os.PathLike[str], path: str | os.PathLike[str]
) -> None:
    """Held-out confusion matrices of the fine-tuned model, the baseline and the zero-shot kNN."""
    predictions = pd.read_csv(predictions_tsv, sep="\t", dtype=str)
    metrics = pd.read_csv(metrics_tsv, sep="\t").set_index("method")
    methods = [m for m in METHOD_TITLES if m in predictions]
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 4.6), squeeze=False)
    for ax, method in zip(axes[0], methods):
        m = metrics.loc[method]
        title = f"{METHOD_TITLES[method]}\naccuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}"
        _confusion(ax, predictions["true"], predictions[method], title)
    fig.suptitle(
        f"cell-type classification, {int(metrics['n_test'].iloc[0])} held-out cells "
        f"({int(metrics['n_train'].iloc[0])} for training)"
        + (f"; {metrics['split'].iloc[0]}" if "split" in metrics else ""),
        fontsize=10,
    )
    save(fig, path)


def embedding_umap(embeddings_h5ad: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """UMAP of the cell embeddings coloured by cell type and by source."""
    adata = ad.read_h5ad(embeddings_h5ad)
    xy = adata.obsm["X_umap"]
    how = adata.uns.get("cellfate_embedding", {})
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    order = np.random.default_rng(0).permutation(adata.n_obs)  # no group drawn entirely on top
    for ax, column in zip(axes, ("cell_type", "source")):
        values = adata.obs[column].astype(str).to_numpy()
        groups = sorted(set(values))
        colour = {g: PALETTE[k % 10] for k, g in enumerate(groups)}
        ax.scatter(xy[order, 0], xy[order, 1], s=4, c=[colour[v] for v in values[order]], linewidths=0)
        for g in groups:
            ax.scatter([], [], s=20, color=colour[g], label=f"{g} ({int((values == g).sum())})")
        ax.legend(fontsize=7, markerscale=1, loc="best", frameon=False)
        ax.set_title(f"coloured by {column.replace('_', ' ')}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
    fig.suptitle(
        f"{adata.n_obs} cells, layer {how.get('layer', '?')} embeddings ({how.get('pooling', '?')} pooling)",
        fontsize=10,
    )
    save(fig, path)


def perturbation_top_genes(
    tables: Sequence[str | os.PathLike[str]],
    experiments: Mapping[str, Mapping[str, object]],
    path: str | os.PathLike[str],
    top: int = 15,
) -> None:
    """Per screen: the genes whose perturbation moves cells most toward the goal (and the most opposed),
    filled when significant (FDR), coloured by group, with the control genes' mean shift as a line."""
    frames = [pd.read_csv(t, sep="\t") for t in tables]
    fig, axes = plt.subplots(len(frames), 1, figsize=(8, 0.32 * (top + 5) * len(frames) + 1), squeeze=False)
    colours = {"requested": PALETTE[3], "control": PALETTE[7], "expressed": PALETTE[0]}
    for ax, table in zip(axes[:, 0], frames):
        name = str(table["experiment"].iloc[0])
        spec = experiments.get(name, {})
        tested = table[table["status"] == "tested"].sort_values("mean_shift", ascending=False)
        requested = tested[tested["group"] == "requested"].head(40)  # always shown, wherever they rank
        shown = pd.concat([tested.head(top), requested, tested.tail(min(5, max(len(tested) - top, 0)))])
        shown = shown.drop_duplicates("gene_id").sort_values("mean_shift", ascending=False)
        y = np.arange(len(shown))[::-1]
        for yy, row in zip(y, shown.itertuples()):
            colour = colours.get(row.group, PALETTE[0])
            ax.barh(yy, row.mean_shift, color=colour if row.significant else "white", edgecolor=colour, lw=1.2)
        ax.set_yticks(
            y,
            [f"{s if isinstance(s, str) and s else g}" for s, g in zip(shown["symbol"], shown["gene_id"])],
            fontsize=7,
        )
        controls = tested[tested["group"] == "control"]
        versus = ""
        if len(controls):
            ax.axvline(controls["mean_shift"].mean(), color=PALETTE[7], ls="--", lw=1, label="mean of control genes")
            if len(requested):
                p = stats.mannwhitneyu(requested["mean_shift"], controls["mean_shift"], alternative="greater").pvalue
                versus = f"\nrequested vs control genes' mean shifts: one-sided rank-sum p = {p:.2g}"
        ax.axvline(0, color="black", lw=0.6)
        handles = [
            Patch(facecolor=c, edgecolor=c, label=f"{g} (filled: FDR < 0.05)")
            for g, c in colours.items()
            if (tested["group"] == g).any()
        ]
        skipped = table[table["status"] != "tested"]
        note = (
            f"; skipped: {', '.join(f'{s} ({st})' for s, st in zip(skipped['symbol'], skipped['status']))}"
            if len(skipped)
            else ""
        )
        ax.set_title(
            f"{name}: {spec.get('mode', 'overexpress')} in {spec.get('start', '?')} -> goal {spec.get('goal', '?')}"
            f" ({len(tested)} genes tested{note}){versus}",
            fontsize=9,
        )
        ax.set_xlabel("mean shift toward the goal: cos(perturbed, goal) - cos(original, goal)")
        ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="lower right")
    save(fig, path)


def cross_species(
    summary_tsv: str | os.PathLike[str],
    predictions_tsv: str | os.PathLike[str],
    orthologs: Sequence[str | os.PathLike[str]],
    path: str | os.PathLike[str],
) -> None:
    """Genes and counts kept through one-to-one orthologs, and the mouse classifier on the human cells."""
    summary = pd.read_csv(summary_tsv, sep="\t")
    predictions = pd.read_csv(predictions_tsv, sep="\t", dtype={"true": str, "finetuned": str, "knn": str})
    fig, (ax_bar, ax_ft, ax_knn) = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    labels = []
    for k, table_path in enumerate(orthologs):
        table = pd.read_csv(table_path, sep="\t").set_index("homology")
        sample = str(table["sample"].iloc[0])
        for j, (what, column) in enumerate((("genes", "fraction_genes"), ("counts", "fraction_counts"))):
            left = 0.0
            y = 2 * k + j
            for homology, colour in HOMOLOGY_COLOURS.items():
                value = float(table[column].get(homology, 0.0))
                ax_bar.barh(y, value, left=left, color=colour, label=homology if y == 0 else None)
                if value > 0.06:
                    ax_bar.text(left + value / 2, y, f"{value:.0%}", ha="center", va="center", fontsize=7)
                left += value
            labels.append(f"{sample}\n{what}")
    ax_bar.set_yticks(range(len(labels)), labels, fontsize=7)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("fraction of the human sample")
    ax_bar.legend(
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=3,
        title="ortholog class (kept: one2one)",
        title_fontsize=7,
    )
    ax_bar.set_title("human genes -> mouse genes", fontsize=9)
    known = predictions[predictions["known_type"].astype(str) == "True"]
    row = summary.iloc[0]
    _confusion(
        ax_ft,
        known["true"],
        known["finetuned"],
        f"fine-tuned mouse classifier on human cells\nmacro-F1 {row.get('finetuned_macro_f1', np.nan):.3f}, "
        f"accuracy {row.get('finetuned_accuracy', np.nan):.3f}",
    )
    _confusion(
        ax_knn,
        known["true"],
        known["knn"],
        f"kNN transfer from mouse embeddings\nmacro-F1 {row.get('knn_macro_f1', np.nan):.3f}, "
        f"accuracy {row.get('knn_accuracy', np.nan):.3f}",
    )
    save(fig, path)


def fluctuation_perturbation(
    table_tsv: str | os.PathLike[str],
    path: str | os.PathLike[str],
    summary_tsv: str | os.PathLike[str] | None = None,
    fdr: float = 0.05,
) -> None:
    """Per fate: each overexpressed gene's mean shift toward the fate, VICDYF's drivers against the
    random decoys and the control genes they are tested against (filled: FDR < ``fdr``); with the
    summary, each set's gene-level FDR under its label."""
    table = pd.read_csv(table_tsv, sep="\t")
    summary = pd.read_csv(summary_tsv, sep="\t") if summary_tsv else pd.DataFrame(columns=["fate", "group", "set_fdr"])
    set_fdr = {(str(r.fate), r.group): r.set_fdr for r in summary.itertuples()}
    fates = list(dict.fromkeys(table["fate"].astype(str)))
    fig, axes = plt.subplots(1, len(fates), figsize=(4.2 * len(fates), 4.2), squeeze=False, sharey=True)
    colours = {"driver": PALETTE[3], "decoy": PALETTE[0], "control": PALETTE[7]}
    rng = np.random.default_rng(0)
    for ax, fate in zip(axes[0], fates):
        part = table[table["fate"].astype(str) == fate]
        for x, (group, colour) in enumerate(colours.items()):
            rows = part[part["group"] == group]
            jitter = x + rng.uniform(-0.18, 0.18, len(rows))
            filled = rows["significant"].fillna(False).astype(bool).to_numpy()
            ax.scatter(jitter, rows["mean_shift"], s=28, edgecolors=colour, facecolors=[colour if f else "white" for f in filled])
            if len(rows):
                ax.hlines(rows["mean_shift"].median(), x - 0.3, x + 0.3, color=colour, lw=2)
        tested = part[part["group"].isin(["driver", "decoy"])]
        counts = {g: f"{int(r['significant'].sum())}/{len(r)}" for g, r in tested.groupby("group")}
        labels = [
            f"{g}s\n{counts.get(g, '')}" + (f"\nset FDR {set_fdr[(fate, g)]:.2g}" if (fate, g) in set_fdr else "")
            for g in colours
        ]
        ax.set_xticks(range(len(colours)), labels, fontsize=8)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"overexpressed in progenitors -> {fate}", fontsize=9)
    axes[0, 0].set_ylabel("mean shift toward the fate: cos(perturbed, fate) - cos(original, fate)", fontsize=8)
    fig.suptitle(
        f"VICDYF's fluctuation drivers in the foundation model (filled: one-sided rank-sum vs controls, BH FDR < {fdr:g})",
        fontsize=9,
    )
    save(fig, path)
