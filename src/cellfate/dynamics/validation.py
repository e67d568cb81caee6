"""VICDYF against the simulated differentiation's truth (:mod:`cellfate.simulate.bifurcation`).

Three questions, each a number with the threshold the tests assert (:data:`THRESHOLDS`, set from
what the model achieves on the demo data with a margin):

- velocity: per cell, the cosine between the estimated and the true ds/dt over genes. The model's
  velocity is in units of the size-factor matrix; multiplied by the gene factor it is in counts
  (the cell factor does not change a cosine);
- fluctuation: highest just past the branch point, where the two lineages are still close in
  expression but diverge (pseudotime in [branch, branch + ``window``]): the mean fluctuation
  there over that elsewhere, and the pseudotime bin where the binned mean peaks;
- fate genes: the simulator's fate-driving genes should rank near the top of the genes that
  carry the fluctuation toward their own fate: their median rank as a fraction of the genes.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd

from cellfate.errors import CellfateError

log = logging.getLogger(__name__)

#: metric -> (comparison, threshold): what the validation tests and the report check.
#: Achieved in tests/test_fluctuation.py's fit (600 cells x 100 genes, 200 + 200 epochs, patience
#: 50) with the default starting beta 0.1: cosine 0.48, moving cells 0.79, branch ratio 1.68, peak
#: offset 0.05, driver median rank fraction 0.085.
THRESHOLDS: dict[str, tuple[str, float]] = {
    "velocity_cosine_mean": (">=", 0.35),
    "velocity_cosine_moving_mean": (">=", 0.6),
    "fluctuation_branch_ratio": (">=", 1.3),
    "fluctuation_peak_offset": ("<=", 0.15),
    "driver_median_rank_fraction": ("<=", 0.2),
}
DESCRIPTIONS = {
    "velocity_cosine_mean": "mean over cells of cos(estimated, true ds/dt)",
    "velocity_cosine_median": "median over cells of the same cosine",
    "velocity_cosine_moving_mean": "mean cosine over cells whose true speed is above the median",
    "fluctuation_branch_ratio": "mean fluctuation just past the branch point / elsewhere",
    "fluctuation_peak_pseudotime": "centre of the pseudotime bin with the highest mean fluctuation",
    "fluctuation_peak_offset": "|peak pseudotime - (branch + window / 2)|",
    "driver_median_rank_fraction": "median rank of fate drivers toward their fate / number of genes (both fates)",
}


def velocity_cosine(estimated: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-row cosine; NaN where either vector is zero."""
    num = (estimated * true).sum(1)
    den = np.linalg.norm(estimated, axis=1) * np.linalg.norm(true, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def estimated_count_velocity(adata: ad.AnnData) -> np.ndarray:
    """vicdyf_mean_velocity in count units per gene (times the gene factor of N)."""
    return np.asarray(adata.layers["vicdyf_mean_velocity"]) * adata.var["vicdyf_gene_scale"].to_numpy()[None, :]


def binned_mean(values: np.ndarray, pseudotime: np.ndarray, n_bins: int = 10) -> pd.Series:
    """Mean of ``values`` in equal-width pseudotime bins, indexed by bin centre."""
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(pseudotime, edges) - 1, 0, n_bins - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    means = pd.Series(values).groupby(which).mean()
    return pd.Series(means.to_numpy(), index=centres[means.index.to_numpy()])


def driver_ranks(genes: pd.DataFrame, truth_var: pd.DataFrame) -> pd.DataFrame:
    """Rank of each simulated fate driver in the ranking toward its own fate."""
    rows = []
    for fate, table in genes.groupby("fate", sort=False):
        drivers = truth_var.index[truth_var["fate_driver"].astype(str) == fate]
        ranked = table.set_index("gene_id")
        for gene in drivers:
            if gene in ranked.index:
                rows.append({"fate": fate, "gene_id": gene, "symbol": ranked.loc[gene, "symbol"],
                             "rank": int(ranked.loc[gene, "rank"]), "n_genes": len(ranked)})
    return pd.DataFrame(rows, columns=["fate", "gene_id", "symbol", "rank", "n_genes"])


def validate(adata: ad.AnnData, truth: ad.AnnData, genes: pd.DataFrame, window: float = 0.2,
             source: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Metrics table (metric, value, threshold, passed, description), driver ranks, per-cell cosines."""
    cells = adata.obs_names.intersection(truth.obs_names)
    missing_genes = adata.var_names.difference(truth.var_names)
    if len(cells) < adata.n_obs or len(missing_genes):
        raise CellfateError(
            f"the truth does not match the fitted data: {adata.n_obs - len(cells)} cells and {len(missing_genes)} genes "
            f"(e.g. {list(missing_genes[:3])}) are not in it", source)
    truth = truth[adata.obs_names, adata.var_names]
    cos = velocity_cosine(estimated_count_velocity(adata), np.asarray(truth.layers["true_velocity"]))
    speed = np.linalg.norm(np.asarray(truth.layers["true_velocity"]), axis=1)
    moving = speed > np.median(speed)
    branch = float(truth.uns["simulation"]["branch_time"])
    pseudotime = truth.obs["pseudotime"].to_numpy()
    fluct = adata.obs["vicdyf_fluctuation"].to_numpy()
    near = (pseudotime >= branch) & (pseudotime <= branch + window)
    binned = binned_mean(fluct, pseudotime)
    peak = float(binned.idxmax())
    ranks = driver_ranks(genes, truth.var)
    values = {
        "velocity_cosine_mean": float(np.nanmean(cos)),
        "velocity_cosine_median": float(np.nanmedian(cos)),
        "velocity_cosine_moving_mean": float(np.nanmean(cos[moving])),
        "fluctuation_branch_ratio": float(fluct[near].mean() / fluct[~near].mean()),
        "fluctuation_peak_pseudotime": peak,
        "fluctuation_peak_offset": abs(peak - (branch + window / 2)),
        "driver_median_rank_fraction": float((ranks["rank"] / ranks["n_genes"]).median()) if len(ranks) else np.nan,
    }
    for fate, table in ranks.groupby("fate", sort=False):
        values[f"driver_median_rank_{fate}"] = float(table["rank"].median())
        values[f"driver_best_rank_{fate}"] = float(table["rank"].min())
        DESCRIPTIONS.setdefault(f"driver_median_rank_{fate}", f"median rank of the {fate} drivers toward {fate}")
        DESCRIPTIONS.setdefault(f"driver_best_rank_{fate}", f"best rank of a {fate} driver toward {fate}")
    rows = []
    for metric, value in values.items():
        op, threshold = THRESHOLDS.get(metric, ("", np.nan))
        passed = "" if not op else bool(value >= threshold if op == ">=" else value <= threshold)
        rows.append({"metric": metric, "value": value, "comparison": op, "threshold": threshold, "passed": passed,
                     "description": DESCRIPTIONS.get(metric, "")})
        log.info("%s = %.4g %s", metric, value, f"({op} {threshold}: {'pass' if passed else 'FAIL'})" if op else "")
    return pd.DataFrame(rows), ranks, cos


def fluctuation_scores(adata: ad.AnnData) -> dict[str, np.ndarray]:
    """Candidate per-cell fluctuation scores from VICDYF's outputs (diagnostics for the benchmark).

    ``raw``: obs vicdyf_fluctuation (gene-mean SD of the decoded displacement); ``relative``: the
    same over the cell's gene-mean expression; ``cv``: gene-mean of SD / expression; ``latent``:
    the norm of the diffusion in latent space; ``latent_vs_drift``: that over the drift's norm.
    """
    expr = np.asarray(adata.layers["vicdyf_expression"])
    fl = np.asarray(adata.layers["vicdyf_fluctuation"])
    diffusion = np.linalg.norm(np.asarray(adata.obsm["X_vicdyf_diffusion"]), axis=1)
    drift = np.linalg.norm(np.asarray(adata.obsm["X_vicdyf_dl"]), axis=1)
    return {
        "raw": adata.obs["vicdyf_fluctuation"].to_numpy(),
        "relative": fl.mean(1) / np.maximum(expr.mean(1), 1e-12),
        "cv": (fl / np.maximum(expr, 1e-6)).mean(1),
        "latent": diffusion,
        "latent_vs_drift": diffusion / np.maximum(drift, 1e-12),
    }


def true_velocity_spread(true_velocity: np.ndarray, latent: np.ndarray, n_neighbors: int = 20) -> np.ndarray:
    """Per cell: the RMS spread of the true ds/dt over its ``n_neighbors`` nearest cells in ``latent``.

    The quantity a learnt diffusion can at best recover: how much the futures of cells in the same
    state disagree. It is the benchmark's ceiling for the fluctuation's localisation at a branch (if
    the simulator's own disagreement is not raised there, no estimate of it can be).
    """
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=n_neighbors).fit(latent).kneighbors(return_distance=False)
    v = np.asarray(true_velocity, dtype=np.float64)[idx]
    return np.sqrt(((v - v.mean(1, keepdims=True)) ** 2).sum(-1).mean(1))


def localisation(values: np.ndarray, pseudotime: np.ndarray, branch: float, window: float = 0.15,
                 bin_width: float = 0.05, min_cells: int = 10) -> dict[str, float]:
    """Ratio of the mean of ``values`` in [branch, branch + window] over the rest, and where its binned mean peaks."""
    near = (pseudotime >= branch) & (pseudotime <= branch + window)
    n_bins = int(round(1 / bin_width))
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(pseudotime, edges) - 1, 0, n_bins - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    frame = pd.DataFrame({"bin": which, "v": values}).groupby("bin")["v"].agg(["mean", "size"])
    frame = frame[frame["size"] >= min_cells]
    peak = float(centres[frame["mean"].idxmax()])
    return {"ratio": float(values[near].mean() / values[~near].mean()), "peak": peak,
            "peak_in_window": bool(branch <= peak <= branch + window)}


def fluctuation_localisation(adata: ad.AnnData, pseudotime: np.ndarray, branch: float, window: float = 0.15,
                             bin_width: float = 0.05, min_cells: int = 10) -> dict[str, dict[str, float]]:
    """:func:`localisation` of every score of :func:`fluctuation_scores`."""
    return {name: localisation(values, pseudotime, branch, window, bin_width, min_cells)
            for name, values in fluctuation_scores(adata).items()}
