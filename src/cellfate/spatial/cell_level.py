"""Cell-level map checks on a tissue whose cells carry their home in their expression.

A type-level map can be right while every cell of a type gets the same spot distribution; these
numbers tell whether each cell's own map follows where it really lives:

- per gradient type, Spearman between each cell's mapped expected x (p_mat @ spot x) and its true
  x, and the mapped spread: mean mapped x of the cells truly in the top third minus that of the
  bottom third, as a fraction of the same difference in true x (0: every cell mapped alike);
- for a type with two sub-states living in two halves, AUROC of mapped x for the sub-state;
- the expression-match baseline: each cell to the spots whose expression (genes centred over
  spots) correlates best with the cell's (genes centred over cells), a softmax over spots.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score


def expected_position(p_mat: np.ndarray, xy: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Cells x 2: each cell's mean position under its spot distribution (rows of p_mat sum to 1)."""
    return np.concatenate([np.asarray(p_mat[i:i + chunk], dtype=np.float64) @ xy for i in range(0, len(p_mat), chunk)])


def spread_ratio(mapped: np.ndarray, true: np.ndarray) -> float:
    """(mapped top third - bottom third) / (true top third - bottom third), thirds by the true value."""
    lo, hi = np.quantile(true, [1 / 3, 2 / 3])
    bottom, top = true <= lo, true >= hi
    return float((mapped[top].mean() - mapped[bottom].mean()) / (true[top].mean() - true[bottom].mean()))


def cell_level_metrics(p_mat: np.ndarray, xy: np.ndarray, obs: pd.DataFrame, gradient_type: str,
                       substate_type: str, type_key: str = "cell_type") -> dict[str, float]:
    """The cell-level numbers above for one map (p_mat rows = the cells of ``obs``)."""
    pos = expected_position(p_mat, xy)
    labels = obs[type_key].astype(str).to_numpy()
    g = labels == gradient_type
    s = (labels == substate_type) & (obs["true_substate"].to_numpy() >= 0)
    true_x = obs["true_x"].to_numpy()
    return {
        "cell_x_spearman": float(spearmanr(pos[g, 0], true_x[g]).statistic),
        "cell_x_spread": spread_ratio(pos[g, 0], true_x[g]),
        "substate_auroc": float(roc_auc_score(obs["true_substate"].to_numpy()[s], pos[s, 0])),
    }


def _log_norm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.log1p(x * (1e4 / np.maximum(x.sum(1, keepdims=True), 1.0)))


def expression_match(cells: np.ndarray, spots: np.ndarray, temperature: float = 0.05) -> np.ndarray:
    """Cells x spots softmax over spots of the correlation of centred log expression (a baseline
    that knows nothing of types; ``cells`` and ``spots`` are counts over the same genes)."""
    a = _log_norm(cells)
    b = _log_norm(spots)
    a -= a.mean(0)
    b -= b.mean(0)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    score = (a @ b.T) / temperature
    score -= score.max(1, keepdims=True)
    p = np.exp(score)
    return p / p.sum(1, keepdims=True)
