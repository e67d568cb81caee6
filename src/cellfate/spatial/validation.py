"""DeepCOLOR against the simulated tissue's truth: the figures a user can trust the map by.

- per type, Pearson correlation over spots between the type's share of each spot (the sum of
  its cells' map2sp, the original's per-type map) and its true share (its cells over the spot's
  cells). Not the mean p_mat of its reference cells: once each cell's map follows its own home,
  that mean follows where the sampled reference cells live, not the tissue (placing every
  reference cell exactly at its true spot scores 0.84 on the cell-level tissue, seed 0);
- over type pairs (unordered, distinct types), AUROC of the type-level colocalization score for
  the truly colocalized pairs (types sharing a domain), and Spearman correlation with the true
  log2 overlap ratio: with few pairs AUROC saturates, rank agreement is the more telling figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score


def true_fractions(true_abundance: np.ndarray) -> np.ndarray:
    """Spots x types: each type's share of the spot's true cells."""
    return true_abundance / np.maximum(true_abundance.sum(1, keepdims=True), 1e-12)


def map_correlation(distribution: pd.DataFrame, true_abundance: np.ndarray, cell_types: list[str]) -> pd.Series:
    """Per type: Pearson r over spots between an estimated map and the truth (same shape)."""
    out = {}
    for k, name in enumerate(cell_types):
        if name in distribution and np.std(true_abundance[:, k]) > 0:
            out[name] = float(np.corrcoef(distribution[name].to_numpy(), true_abundance[:, k])[0, 1])
    return pd.Series(out, name="map_correlation")


def type_pairs(matrix: pd.DataFrame) -> pd.DataFrame:
    """Unordered distinct type pairs (a < b) with the score, symmetrised as the mean of both orders."""
    types = list(matrix.index)
    rows = [(a, b, 0.5 * (matrix.loc[a, b] + matrix.loc[b, a])) for ia, a in enumerate(types) for b in types[ia + 1:]]
    return pd.DataFrame(rows, columns=["type_a", "type_b", "score"])


def colocalization_agreement(matrix: pd.DataFrame, colocalized: list[tuple[str, str]],
                             truth: pd.DataFrame | None = None) -> dict[str, float]:
    """AUROC for the truly colocalized pairs and (with ``truth``) Spearman with the true scores."""
    pairs = type_pairs(matrix)
    positive = {tuple(sorted(p)) for p in colocalized}
    label = np.array([(a, b) in positive or (b, a) in positive for a, b in zip(pairs["type_a"], pairs["type_b"])])
    out = {"colocalization_auroc": float(roc_auc_score(label, pairs["score"])) if 0 < label.sum() < len(label) else np.nan}
    if truth is not None:
        true = [truth.loc[a, b] for a, b in zip(pairs["type_a"], pairs["type_b"])]
        out["colocalization_spearman"] = float(spearmanr(pairs["score"], true).statistic)
    return out


def truth_frames(spots_uns: dict) -> tuple[list[str], list[tuple[str, str]], pd.DataFrame]:
    """The simulated tissue's type names, colocalized pairs and true pair matrix."""
    types = [str(t) for t in spots_uns["cell_types"]]
    pairs = [tuple(str(x) for x in p) for p in np.asarray(spots_uns["colocalized_pairs"])]
    truth = pd.DataFrame(np.asarray(spots_uns["true_pair_colocalization"]), index=types, columns=types)
    return types, pairs, truth


def validation_table(shares: pd.DataFrame, type_matrix: pd.DataFrame, true_abundance: np.ndarray,
                     spots_uns: dict, extra: dict[str, float] | None = None) -> pd.DataFrame:
    """Long table: metric, subject, value (per-type map correlations, their mean, pair metrics).

    ``shares``: spots x types, each type's share of each spot (see the module docstring).
    """
    types, pairs, truth = truth_frames(spots_uns)
    corr = map_correlation(shares, true_fractions(true_abundance), types)
    rows = [("map_correlation", name, value) for name, value in corr.items()]
    rows.append(("map_correlation_mean", "all types", float(corr.mean())))
    common = [t for t in types if t in type_matrix.index]
    for key, value in colocalization_agreement(type_matrix.loc[common, common], pairs, truth.loc[common, common]).items():
        rows.append((key, "type pairs", value))
    for key, value in (extra or {}).items():
        rows.append((key, "", value))
    return pd.DataFrame(rows, columns=["metric", "subject", "value"])


def forward_rows(table: pd.DataFrame) -> dict[str, float]:
    """The forward analysis' validation rows (for spatial/validation.tsv): shares of the effect
    rows with the right sign and within 2x, and of the null rows whose interval covers 0 (first
    fate only: with two fates the second row mirrors the first)."""
    if "true_shift" not in table:
        return {}
    first = table[table["fate"] == table["fate"].iloc[0]].dropna(subset=["true_shift"])
    effect, null = first[~first["true_null"].astype(bool)], first[first["true_null"].astype(bool)]
    out = {}
    if len(effect):
        out["forward_sign_ok"] = float(effect["sign_ok"].mean())
        out["forward_within_2x"] = float(effect["within_2x"].mean())
    if len(null):
        out["forward_null_covers_zero"] = float(null["covers_zero"].mean())
    return out
