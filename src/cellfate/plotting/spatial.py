"""Figures of the spatial stage (DeepCOLOR): maps, colocalization, pair clusters, ligands,
environment-dependent dynamics and the validation against the simulated truth."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd

from cellfate.plotting.style import PALETTE, plt, save

PathLike = str | os.PathLike[str]


def _grid(n: int, cols: int = 4, w: float = 3.2, h: float = 3.0):
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes


def deepcolor_maps(mapped_spots: PathLike, path: PathLike) -> None:
    """Each cell type's share of every spot as DeepCOLOR maps it."""
    spots = ad.read_h5ad(mapped_spots)
    share = pd.DataFrame(spots.obsm["deepcolor_type_share"], index=spots.obs_names)
    xy = spots.obsm["spatial"] if "spatial" in spots.obsm else np.c_[np.arange(spots.n_obs), np.zeros(spots.n_obs)]
    fig, axes = _grid(share.shape[1])
    for ax, name in zip(axes, share.columns):
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=share[name], s=14, marker="s", cmap="magma")
        fig.colorbar(sc, ax=ax, fraction=0.046)
        ax.set_title(f"{name} (share of spot)", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    save(fig, path)


def colocalization_heatmap(types_tsv: PathLike, path: PathLike) -> None:
    """Type-pair colocalization: log2 mean overlap ratio (0 = as if uniformly spread)."""
    m = pd.read_csv(types_tsv, sep="\t", index_col=0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(m), 0.8 + 0.6 * len(m)))
    lim = max(1.0, float(np.nanmax(np.abs(m.to_numpy()))))
    im = ax.imshow(m.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(m)), m.columns, rotation=90, fontsize=8)
    ax.set_yticks(range(len(m)), m.index, fontsize=8)
    for (i, j), v in np.ndenumerate(m.to_numpy()):
        ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="log2 colocalization")
    ax.set_title("cell-type colocalization (DeepCOLOR)", fontsize=10)
    save(fig, path)


def pair_clusters_umap(pairs_tsv: PathLike, path: PathLike) -> None:
    """UMAP of colocalized pairs (z_i + z_j), coloured by Leiden cluster and by type pair."""
    pairs = pd.read_csv(pairs_tsv, sep="\t", dtype={"cluster": str})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key in zip(axes, ("cluster", "pair_type")):
        for k, (name, group) in enumerate(pairs.groupby(key)):
            ax.scatter(group["umap_1"], group["umap_2"], s=3, color=PALETTE[k % len(PALETTE)], label=f"{name} ({len(group)})")
        ax.legend(fontsize=7, markerscale=4)
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.set_title(f"colocalized pairs by {key.replace('_', ' ')}", fontsize=10)
    save(fig, path)


def ligand_activity(ligands_tsv: PathLike, path: PathLike, top: int = 20) -> None:
    """The strongest (sender -> receiver: ligand) co-activities over colocalization edges."""
    table = pd.read_csv(ligands_tsv, sep="\t").head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(table) + 1.2))
    labels = [f"{r.sender_type} -> {r.receiver_type}: {r.ligand}" for r in table.itertuples()]
    ax.barh(range(len(table)), table["coactivity"], color=PALETTE[0])
    ax.set_yticks(range(len(table)), labels, fontsize=8)
    ax.set_xlabel("co-activity summed over colocalization edges")
    ax.set_title("ligand activity between colocalized cells", fontsize=10)
    save(fig, path)


def spatial_validation(mapped_spots: PathLike, truth_spots: PathLike, types_tsv: PathLike, validation_tsv: PathLike,
                       path: PathLike) -> None:
    """Estimated vs true type share of each spot, colocalization score vs truth, and the
    environment analysis' positive and negative controls."""
    mapped = ad.read_h5ad(mapped_spots)
    truth = ad.read_h5ad(truth_spots)
    share = pd.DataFrame(mapped.obsm["deepcolor_type_share"], index=mapped.obs_names)
    types = [str(t) for t in truth.uns["cell_types"]]
    ab = truth.obsm["true_abundance"]
    frac = ab / np.maximum(ab.sum(1, keepdims=True), 1e-12)
    val = pd.read_csv(validation_tsv, sep="\t")
    metric = val.set_index(["metric", "subject"])["value"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for k, name in enumerate(types):
        if name in share:
            axes[0].scatter(frac[:, k], share[name], s=4, color=PALETTE[k % 10],
                            label=f"{name} r={metric.get(('map_correlation', name), np.nan):.2f}")
    axes[0].set_xlabel("true share of the spot's cells")
    axes[0].set_ylabel("DeepCOLOR type share")
    axes[0].legend(fontsize=7, markerscale=3)
    axes[0].set_title(f"spatial maps: mean r = {metric.get(('map_correlation_mean', 'all types'), np.nan):.2f}", fontsize=10)
    m = pd.read_csv(types_tsv, sep="\t", index_col=0)
    true = pd.DataFrame(truth.uns["true_pair_colocalization"], index=types, columns=types)
    pairs = {tuple(sorted(map(str, p))) for p in truth.uns["colocalized_pairs"]}
    for i, a in enumerate(types):
        for b in types[i + 1:]:
            if a in m.index and b in m.index:
                hit = (a, b) in pairs
                axes[1].scatter(true.loc[a, b], 0.5 * (m.loc[a, b] + m.loc[b, a]), color=PALETTE[3 if hit else 7], s=30)
    axes[1].scatter([], [], color=PALETTE[3], label="truly colocalized")
    axes[1].scatter([], [], color=PALETTE[7], label="not colocalized")
    axes[1].legend(fontsize=8)
    axes[1].set_xlabel("true log2 colocalization")
    axes[1].set_ylabel("DeepCOLOR log2 colocalization")
    auroc = metric.get(("colocalization_auroc", "type pairs"), np.nan)
    rho = metric.get(("colocalization_spearman", "type pairs"), np.nan)
    axes[1].set_title(f"type pairs: AUROC {auroc:.2f}, Spearman {rho:.2f}", fontsize=10)
    _environment_controls(axes[2], val)
    save(fig, path)


def _environment_controls(ax: plt.Axes, val: pd.DataFrame) -> None:
    """Bars: driver named (positive control), nothing named (negative control), per condition."""
    rows = [("positive: driver named", "environment_partner_named"),
            ("negative: nothing named", "environment_negative_nothing_named")]
    values = val.set_index("metric")["value"]
    x = np.arange(len(rows))
    for j, (suffix, label) in enumerate((("", "DeepCOLOR colocalization"), ("_truth_c", "true densities"))):
        heights = [float(values.get(key + suffix, np.nan)) for _, key in rows]
        ax.bar(x + (j - 0.5) * 0.35, heights, width=0.35, color=PALETTE[j], label=label)
    ax.set_xticks(x, [name for name, _ in rows], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("passes (1) / fails (0)")
    ax.legend(fontsize=8)
    ax.set_title("environment analysis: conditional permutation test", fontsize=10)


def environment_dynamics(modes_tsv: PathLike, genes_tsv: PathLike, ligands_tsv: PathLike, path: PathLike,
                         top: int = 15) -> None:
    """Partner weights of the environment modes, the genes whose velocity mode 1 changes most,
    and the ligands that would cause it."""
    modes = pd.read_csv(modes_tsv, sep="\t")
    control = ""
    if "condition" in modes:  # the configured condition first; a simulated tissue adds the true densities
        conditions = list(dict.fromkeys(modes["condition"]))
        for other in conditions[1:]:
            first = modes[(modes["condition"] == other) & (modes["mode"] == 1)].sort_values("abs_weight").iloc[-1]
            control += f"\n(control, c = {other}: mode 1 is {first['partner']}, weight {first['weight']:.2f})"
        modes = modes[modes["condition"] == conditions[0]]
    genes = pd.read_csv(genes_tsv, sep="\t")
    ligs = pd.read_csv(ligands_tsv, sep="\t")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    partners = list(dict.fromkeys(modes["partner"]))
    n_modes = min(3, modes["mode"].nunique())
    width = 0.8 / n_modes
    for k, (mode, group) in enumerate(list(modes.groupby("mode"))[:n_modes]):
        group = group.set_index("partner").loc[partners]
        axes[0].bar(np.arange(len(partners)) + width * k, group["weight"], width=width, color=PALETTE[k],
                    label=f"mode {mode} ({100 * group['explained'].iloc[0]:.0f}%)")
    axes[0].set_xticks(np.arange(len(partners)) + width * (n_modes - 1) / 2, partners, rotation=45, ha="right", fontsize=8)
    axes[0].axhline(0, color="grey", lw=0.5)
    axes[0].legend(fontsize=8)
    axes[0].set_ylabel("partner weight")
    axes[0].set_title("environment modes: d drift / d condition" + control, fontsize=9)
    g = genes.head(top).iloc[::-1]
    axes[1].barh(range(len(g)), g["velocity_change"], color=[PALETTE[3] if v < 0 else PALETTE[2] for v in g["velocity_change"]])
    axes[1].set_yticks(range(len(g)), g["gene"], fontsize=8)
    axes[1].set_xlabel("mean velocity change")
    axes[1].set_title("velocity change induced by mode 1", fontsize=10)
    lg = ligs.head(top).iloc[::-1]
    axes[2].barh(range(len(lg)), lg["score"], color=PALETTE[1])
    axes[2].set_yticks(range(len(lg)), lg["ligand"], fontsize=8)
    axes[2].set_xlabel("target score x partner expression")
    partner = lg["partner"].iloc[0] if len(lg) else ""
    axes[2].set_title(f"ligands of {partner} behind mode 1", fontsize=10)
    save(fig, path)
