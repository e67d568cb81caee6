"""Environment-dependent dynamics: how a cell's neighbours change where its state is heading.

The dynamics network of VICDYF takes concat(z, c), with c the cell's condition: here each cell's
colocalization score with every partner cell type from DeepCOLOR (log2 mean overlap ratio with the
type's cells, standardised), or any per-cell condition matrix (e.g. one-hot experimental
conditions). The effect of the environment is the Jacobian of the drift with respect to c, stacked
over cells and decomposed by SVD: each mode is a direction in partner space (partner weights)
with the latent drift change it causes; pushed through the decoder, a mode gives the velocity
change it induces per gene, and crossed with a ligand-target matrix, the ligands that would cause
it (weighted by how much the partner expresses them).

The model is VICDYF itself (:mod:`cellfate.dynamics`, ``n_condition`` > 0) with its training
loop: its displacement scale and its steady-state start of the kinetics are what let the unspliced
counts speak for the drift at all (a small stand-alone model without them fitted velocity so badly
that no condition could improve it). The analysis functions only need a :class:`ConditionedDrift`
(``drift(z, c)`` and ``decode(z)``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from cellfate.dynamics.module import VicdyfConfig, VicdyfModule
from cellfate.dynamics.train import CountTensors, TrainingPlan, train
from cellfate.errors import CellfateError

log = logging.getLogger(__name__)


class ConditionedDrift(Protocol):
    """What the environment analysis needs from a dynamics model."""

    def drift(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class EnvironmentConfig:
    """Model and training settings of the conditioned dynamics (VICDYF's defaults, fewer epochs)."""

    n_latent: int = 10
    n_hidden: int = 50
    epochs_vae: int = 100
    epochs_dynamics: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    patience: int = 0  # epochs without held-out improvement before a phase stops; 0 = never
    # not VICDYF's 0.3: this analysis reads the drift, which a smaller starting beta pins harder
    # (velocity cosine 0.58 vs 0.53); the fluctuation that 0.3 favours is not used here
    beta_init: float = 0.1
    seed: int = 42

    def training_plan(self, progress: bool = True) -> TrainingPlan:
        return TrainingPlan(epochs_phase1=self.epochs_vae, epochs_phase2=self.epochs_dynamics, batch_size=self.batch_size,
                            lr=self.lr, patience=self.patience, seed=self.seed, progress=progress,
                            device="cpu")  # one lineage, a small net: the Jacobian analysis that follows is on CPU too

    def to_dict(self) -> dict:
        return asdict(self)


def fit_conditioned_dynamics(spliced: np.ndarray, unspliced: np.ndarray, condition: np.ndarray,
                             cfg: EnvironmentConfig = EnvironmentConfig(), progress: bool = True) -> VicdyfModule:
    """VICDYF with a drift that also reads ``condition`` (cells x conditions), fitted in its two phases."""
    data = CountTensors.from_arrays(spliced, unspliced, condition)
    if not torch.all(data.spliced.sum(0) > 0):
        raise CellfateError("every modelled gene needs spliced counts (drop the empty ones first)")
    torch.manual_seed(cfg.seed)
    module = VicdyfModule(VicdyfConfig(n_genes=data.spliced.shape[1], n_latent=cfg.n_latent, n_hidden=cfg.n_hidden,
                                       n_condition=data.condition.shape[1]))
    module.init_kinetics(data.unspliced.sum(0) / data.spliced.sum(0), cfg.beta_init)
    train(module, data, cfg.training_plan(progress))
    return module


@torch.no_grad()
def latent_mean(module: VicdyfModule, spliced: np.ndarray) -> torch.Tensor:
    return module.encode(torch.as_tensor(np.asarray(spliced), dtype=torch.float32))[0]


def condition_jacobian(model: ConditionedDrift, z: torch.Tensor, c: torch.Tensor) -> np.ndarray:
    """Cells x latent x conditions: d drift / d c at every cell (one batched reverse pass per latent axis)."""
    c = c.clone().requires_grad_(True)
    drift = model.drift(z, c)
    rows = [torch.autograd.grad(drift[:, k].sum(), c, retain_graph=True)[0] for k in range(drift.shape[1])]
    return torch.stack(rows, dim=1).detach().cpu().numpy()


def environment_modes(jacobian: np.ndarray, partners: list[str], n_modes: int = 3) -> pd.DataFrame:
    """SVD of the stacked Jacobian ((cells x latent) x partners): modes with partner weights.

    Each mode's sign is set so that its largest-magnitude partner weight is positive: the mode
    then reads "more colocalization with that partner".
    """
    stacked = jacobian.reshape(-1, jacobian.shape[-1])
    _, sv, vt = np.linalg.svd(stacked, full_matrices=False)
    explained = sv**2 / max((sv**2).sum(), 1e-30)
    rows = []
    for k in range(min(n_modes, len(sv))):
        w = vt[k] * np.sign(vt[k][np.argmax(np.abs(vt[k]))])
        for name, weight in zip(partners, w):
            rows.append((k + 1, sv[k], explained[k], name, weight, abs(weight)))
    return pd.DataFrame(rows, columns=["mode", "singular_value", "explained", "partner", "weight", "abs_weight"])


def velocity_change(model: ConditionedDrift, z: torch.Tensor, jacobian: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Per gene: mean over cells of J_dec(z) (J_c direction), the velocity change the mode induces."""
    dz = torch.as_tensor(jacobian @ direction, dtype=torch.float32)  # cells x latent
    _, dv = torch.func.jvp(model.decode, (z,), (dz,))
    return dv.mean(0).detach().cpu().numpy()


def ligand_scores(change: pd.Series, ligand_target: pd.DataFrame, partner_expression: pd.Series | None = None) -> pd.DataFrame:
    """Ligands ranked by sum_g potential(g, L) x max(velocity change_g, 0), times the partner's
    expression of L when known (a ligand the partner does not make cannot be the signal)."""
    genes = change.index.intersection(ligand_target.index)
    if len(genes) == 0:
        raise CellfateError("no gene of the dynamics model is a target in the ligand-target matrix")
    up = np.maximum(change.loc[genes].to_numpy(), 0.0)
    w = ligand_target.loc[genes]
    target_score = pd.Series(w.to_numpy().T @ up / max(up.sum(), 1e-30), index=w.columns)
    out = pd.DataFrame({"ligand": w.columns, "target_score": target_score.to_numpy()})
    expr = partner_expression.reindex(w.columns) if partner_expression is not None else None
    out["partner_expression"] = np.nan if expr is None else expr.to_numpy()
    out["score"] = out["target_score"] * (1.0 if expr is None else out["partner_expression"].fillna(0.0))
    return out.sort_values("score", ascending=False, ignore_index=True)


def colocalization_condition(p_lineage: np.ndarray, p_partners: np.ndarray, partner_labels: np.ndarray,
                             partners: list[str]) -> np.ndarray:
    """Cells x partners: log2 of the mean overlap ratio with each partner type's cells
    (= mean over the type's cells of 2^C_ij), exact from the type's summed distribution."""
    n_spots = p_lineage.shape[1]
    out = np.empty((len(p_lineage), len(partners)))
    for k, name in enumerate(partners):
        sel = partner_labels == name
        if not sel.any():
            raise CellfateError(f"no cell of partner type {name!r} in the reference")
        mean_p = np.asarray(p_partners[sel], dtype=np.float64).mean(0)
        out[:, k] = np.log2(np.maximum(np.asarray(p_lineage, dtype=np.float64) @ mean_p, 1e-300) * n_spots)
    return out


def standardise(c: np.ndarray) -> np.ndarray:
    """Per column to mean 0, sd 1, so Jacobian columns are per standard deviation of each partner."""
    return (c - c.mean(0)) / np.maximum(c.std(0), 1e-12)


def cluster_colocalization_condition(p_lineage: np.ndarray, p_partners: np.ndarray, partner_labels: np.ndarray,
                                     partner_latent: np.ndarray, partners: list[str], clusters_per_type: int,
                                     seed: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    """Cells x partner clusters: colocalization with each sub-population of each partner type.

    exdyn conditions on every partner *cell*; one column per cell makes c as wide as the data and
    its Jacobian noisy, so the partner cells of each type are first grouped (k-means on
    ``partner_latent``: their latent state, or better :func:`within_type_components`) and a cell's
    condition is its colocalization with each group. A mode's weights
    then point at a sub-population. Returns c, column names ``type:k`` and each column's type.
    """
    from sklearn.cluster import KMeans

    columns, names, types = [], [], []
    for name in partners:
        sel = np.flatnonzero(partner_labels == name)
        if len(sel) == 0:
            raise CellfateError(f"no cell of partner type {name!r} in the reference")
        k = max(1, min(clusters_per_type, len(sel) // 10))
        groups = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(partner_latent[sel]) if k > 1 \
            else np.zeros(len(sel), dtype=int)
        for g in range(k):
            mean_p = np.asarray(p_partners[sel[groups == g]], dtype=np.float64).mean(0)
            overlap = np.asarray(p_lineage, dtype=np.float64) @ mean_p * p_lineage.shape[1]
            columns.append(np.log2(np.maximum(overlap, 1e-300)))
            names.append(f"{name}:{g}")
            types.append(name)
    return np.stack(columns, axis=1), names, types


def within_type_components(counts: np.ndarray | sparse.spmatrix, labels: np.ndarray,
                           n_components: int = 10) -> np.ndarray:
    """Cells x ``n_components``: each cell's leading principal components of log-normalised
    expression (log1p of counts per 10k) computed among the cells of its own type only.

    Partner clusters are meant to find a type's sub-populations. DeepCOLOR's latent state (and
    any PCA over all types) spends its axes on what tells types apart; a sub-population that
    differs from the rest of its type by a few marker genes is then mixed into several clusters,
    whereas inside the type it is the leading axis (purities in benchmarks/README.md). Rows of
    different types share columns but not meaning: cluster within a type only. One type is
    densified at a time (float32), so sparse input never becomes all cells x genes dense.
    """
    from sklearn.decomposition import PCA

    x = sparse.csr_matrix(counts, dtype=np.float32)
    out = np.zeros((x.shape[0], n_components))
    for name in np.unique(labels):
        sel = np.flatnonzero(labels == name)
        rows = x[sel].toarray()
        y = np.log1p(rows * (1e4 / np.maximum(rows.sum(1, keepdims=True), 1.0)))
        q = min(n_components, len(sel) - 1, y.shape[1])
        if q > 0:
            out[sel, :q] = PCA(q, random_state=0).fit_transform(y)
    return out


def neighbourhood_condition(xy_cells: np.ndarray, xy_all: np.ndarray, labels_all: np.ndarray, partners: list[str],
                            n_neighbors: int = 15) -> np.ndarray:
    """Cells x partners: the share of each partner type among a cell's ``n_neighbors`` nearest
    cells, for spatial data of single-cell resolution (every cell with coordinates). Observed,
    not mapped: it varies at fixed state wherever the tissue does."""
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors + 1, len(xy_all))
    _, idx = NearestNeighbors(n_neighbors=k).fit(xy_all).kneighbors(xy_cells)
    neigh = labels_all[idx[:, 1:]]  # the nearest is the cell itself
    return np.stack([(neigh == name).mean(1) for name in partners], axis=1)


def state_explains_condition(z: np.ndarray, c: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Per condition column: cross-validated R^2 of predicting c from the cell's own latent state
    (k-nearest-neighbour regression). Near 1, c is a function of z and no model can tell the
    environment's effect from the state's."""
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsRegressor

    k = max(1, min(15, len(z) // 10))
    pred = cross_val_predict(KNeighborsRegressor(n_neighbors=k), z, c,
                             cv=KFold(folds, shuffle=True, random_state=seed))
    pred = pred.reshape(c.shape)
    resid = ((c - pred) ** 2).sum(0)
    total = np.maximum(((c - c.mean(0)) ** 2).sum(0), 1e-30)
    return 1.0 - resid / total


def state_strata(z: np.ndarray, cells_per_stratum: int = 10, seed: int = 0) -> np.ndarray:
    """Groups of cells of similar latent state (k-means, about ``cells_per_stratum`` cells each)."""
    from sklearn.cluster import KMeans

    k = max(1, len(z) // cells_per_stratum)
    return KMeans(n_clusters=k, n_init=2, random_state=seed).fit_predict(z) if k > 1 else np.zeros(len(z), dtype=int)


def permute_within(values: np.ndarray, strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``values`` shuffled among the cells of each stratum."""
    out = values.copy()
    for g in np.unique(strata):
        idx = np.flatnonzero(strata == g)
        out[idx] = values[rng.permutation(idx)]
    return out


def crossfit_folds(n_cells: int, n_folds: int, seed: int) -> list[np.ndarray]:
    """Held-out cells of each fold (sorted indices): every cell is held out exactly once."""
    if n_folds < 2:
        raise CellfateError(f"cross-fitting needs at least 2 folds, not {n_folds}")
    order = np.random.default_rng(seed).permutation(n_cells)
    return [np.sort(fold) for fold in np.array_split(order, n_folds)]


@dataclass(frozen=True)
class HeldOut:
    """One fold's held-out cells as the model fitted without them scores them."""

    module: VicdyfModule
    data: CountTensors
    c: np.ndarray
    z: np.ndarray  # the model's latent means, standardised per axis

    @classmethod
    def of(cls, module: VicdyfModule, spliced: np.ndarray, unspliced: np.ndarray, c: np.ndarray) -> HeldOut:
        z = latent_mean(module, spliced).cpu().numpy()
        return cls(module, CountTensors.from_arrays(spliced, unspliced, c), np.asarray(c, dtype=float),
                   (z - z.mean(0)) / np.maximum(z.std(0), 1e-12))


@torch.no_grad()
def unspliced_nll_sum(module: VicdyfModule, data: CountTensors, c: np.ndarray) -> float:
    """Summed unspliced negative log-likelihood of these cells with condition c (posterior means)."""
    module.eval()
    scored = dataclasses.replace(data, condition=torch.as_tensor(np.asarray(c), dtype=torch.float32))
    return float(scored.loss(module, 0, data.n_cells, sample=False)["nll_u"]) * data.n_cells


def _fold_null(fold: HeldOut, w: np.ndarray, n_permutations: int, rng: np.random.Generator, seed: int,
               cells_per_stratum: int = 10) -> np.ndarray:
    """The fold's summed unspliced nll with the component c.w permuted among cells of similar
    state and similar remaining condition, once per permutation."""
    w = np.asarray(w, dtype=float) / max(np.linalg.norm(w), 1e-12)
    proj = fold.c @ w
    strata = state_strata(np.c_[fold.z, fold.c - np.outer(proj, w)], cells_per_stratum, seed=seed)
    return np.array([unspliced_nll_sum(fold.module, fold.data, fold.c + np.outer(permute_within(proj, strata, rng) - proj, w))
                     for _ in range(n_permutations)])


def conditional_permutation_test(folds: list[HeldOut], directions: dict[str, list[np.ndarray]],
                                 n_permutations: int = 100, seed: int = 0, cells_per_stratum: int = 10) -> pd.DataFrame:
    """Does c explain held-out unspliced counts beyond the cell's own state? Cross-fitted.

    Each fold's cells are scored by the model fitted without them, so every modelled cell is a
    held-out cell once and the statistic is the held-out unspliced nll summed over all of them
    (one held-out fifth left a test with a fifth of the cells and little power). For each
    direction (one vector per fold: a partner's column, or the fold's own mode, chosen by a fit
    that never saw the fold), the component c.w of each fold's cells is permuted among cells of
    similar latent state and similar remaining condition (c minus its w component: a partner is
    tested beyond the other partners too), independently per fold. Under the null (the unspliced
    counts depend on nothing of c.w beyond z and the rest of c) every fold's permuted likelihood
    is as good as the observed one, whatever its model, and so is their sum.
    p = (1 + #{permuted nll <= observed}) / (1 + permutations).
    """
    rng = np.random.default_rng(seed)
    n_cells = sum(f.data.n_cells for f in folds)
    observed = sum(unspliced_nll_sum(f.module, f.data, f.c) for f in folds)
    rows = []
    for name, ws in directions.items():
        null = sum(_fold_null(f, w, n_permutations, rng, seed, cells_per_stratum) for f, w in zip(folds, ws, strict=True))
        rows.append({"direction": name, "heldout_nll_u": observed / n_cells, "permuted_nll_u": float(null.mean()) / n_cells,
                     "nll_gain": float(null.mean() - observed) / n_cells,
                     "p_value": float((1 + (null <= observed).sum()) / (1 + n_permutations))})
    return pd.DataFrame(rows)

