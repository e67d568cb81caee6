"""A differentiation with one fate bifurcation and splicing kinetics, with the truth recorded.

Progenitors (the trunk) move along pseudotime until a branch point, then commit to fate ``alpha``
or ``beta`` (named after pancreatic endocrinogenesis, the VICDYF paper's case; the driver genes
are the real ones: Arx, Irx2... toward alpha, Pdx1, Nkx6-1... toward beta). Each gene follows
the kinetic model du/dt = alpha(t) - beta u, ds/dt = beta u - gamma s with its own rates, so the
true RNA velocity ds/dt of every cell is known, and cells just past the branch point, close in
expression but moving apart, are where the fate is most uncertain.

The programme (genes, rates, switch times) is drawn once (:func:`draw_programme`); cells are then
points on it (:func:`expected_counts`): a fate, a pseudotime and a speed. A cell with speed v runs
the same programme in 1/v of the time, so its unspliced RNA runs further ahead of its spliced RNA:
what a signal that speeds differentiation (:mod:`cellfate.simulate.environment`) leaves behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

from cellfate.genes import mouse_gene_table, symbols_to_ids
from cellfate.simulate.corpus import sample_rng
from cellfate.simulate.expression import random_barcodes

PROGENITOR_GENES = ["Neurog3", "Sox9", "Hes1", "Spp1"]
FATE_DRIVERS = {"alpha": ["Arx", "Irx2", "Gcg", "Mafb", "Pou3f4"], "beta": ["Pdx1", "Nkx6-1", "Ins1", "Mafa", "Iapp"]}


@dataclass(frozen=True)
class BifurcationSpec:
    """Sizes and time scale of the simulated differentiation."""

    n_cells: int = 600
    n_genes: int = 100
    branch_time: float = 0.4  # pseudotime of the branch point, in [0, 1]
    duration: float = 20.0  # real time spanned by pseudotime 0..1 (rates are per unit time)
    progenitor_fraction: float = 0.3
    mean_expression: float = 6.0  # typical steady-state spliced count when a gene is on
    seed: int = 0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _gene_roles(spec: BifurcationSpec, rng: np.random.Generator) -> pd.DataFrame:
    """Real genes with a role each: progenitor, driver of a fate, late (both fates) or constant."""
    named = PROGENITOR_GENES + FATE_DRIVERS["alpha"] + FATE_DRIVERS["beta"]
    if spec.n_genes < len(named) + 10:
        raise ValueError(f"n_genes must be at least {len(named) + 10}")
    table = mouse_gene_table().dropna(subset=["symbol"])
    table = table[~table["symbol"].duplicated() & ~table["is_mitochondrial"]]
    ids = symbols_to_ids(named)
    others = rng.choice(np.asarray(table.index.difference(pd.Index(ids))), size=spec.n_genes - len(named), replace=False)
    roles = ["progenitor"] * len(PROGENITOR_GENES) + ["alpha"] * 5 + ["beta"] * 5
    n_other = len(others)
    extra = rng.choice(["progenitor", "alpha", "beta", "late", "constant"], size=n_other, p=[0.15, 0.15, 0.15, 0.15, 0.4])
    genes = pd.DataFrame({"symbol": table.loc[list(ids) + list(others), "symbol"].to_numpy(),
                          "role": roles + list(extra)}, index=pd.Index(list(ids) + list(others), name="gene_id"))
    genes["fate_driver"] = genes["role"].where(genes["role"].isin(["alpha", "beta"]), "")
    return genes


def _transcription(genes: pd.DataFrame, t: np.ndarray, branch: str, spec: BifurcationSpec,
                   switch: np.ndarray, high: np.ndarray) -> np.ndarray:
    """alpha_g(t) on one lineage (``branch`` in alpha/beta), times x genes."""
    role = genes["role"].to_numpy()
    width = 0.04
    on = _sigmoid((t[:, None] - switch[None, :]) / width)
    low = 0.05 * high
    rate = np.empty((len(t), len(genes)))
    rate[:, role == "constant"] = high[role == "constant"] * 0.6
    rate[:, role == "progenitor"] = (low + (high - low) * (1 - on))[:, role == "progenitor"]
    rate[:, role == "late"] = (low + (high - low) * on)[:, role == "late"]
    for fate in ("alpha", "beta"):
        sel = role == fate
        rate[:, sel] = (low + (high - low) * on)[:, sel] if fate == branch else low[sel]
    return rate


def _integrate(rate: np.ndarray, beta: np.ndarray, gamma: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """u(t), s(t) on the grid, starting at steady state; exact update for piecewise-constant rates."""
    u = np.empty_like(rate)
    s = np.empty_like(rate)
    u[0] = rate[0] / beta
    s[0] = rate[0] / gamma
    if np.any(np.isclose(beta, gamma)):
        raise ValueError("splicing and degradation rates must differ for the closed-form update")
    eb, eg = np.exp(-beta * dt), np.exp(-gamma * dt)
    for k in range(1, len(rate)):
        u_ss, s_ss = rate[k - 1] / beta, rate[k - 1] / gamma
        c = beta * (u[k - 1] - u_ss) / (gamma - beta)
        u[k] = u_ss + (u[k - 1] - u_ss) * eb
        s[k] = s_ss + (s[k - 1] - s_ss - c) * eg + c * eb
    return u, s


@dataclass(frozen=True)
class Programme:
    """The lineage's gene programme: roles and kinetic rates (``genes``), switch times, 'on' rates."""

    spec: BifurcationSpec
    genes: pd.DataFrame  # symbol, role, fate_driver, beta, gamma
    switch: np.ndarray
    high: np.ndarray
    _paths: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def beta(self) -> np.ndarray:
        return self.genes["beta"].to_numpy()

    @property
    def gamma(self) -> np.ndarray:
        return self.genes["gamma"].to_numpy()

    def path(self, fate: str, speed: float) -> tuple[np.ndarray, np.ndarray]:
        """u(t), s(t) on the pseudotime grid of one fate at one speed (cached)."""
        key = (fate, float(speed))
        if key not in self._paths:
            dt = self.spec.duration / speed * (GRID[1] - GRID[0])
            rate = _transcription(self.genes, GRID, fate, self.spec, self.switch, self.high)
            self._paths[key] = _integrate(rate, self.beta, self.gamma, dt)
        return self._paths[key]


GRID = np.linspace(0.0, 1.0, 2001)


def draw_programme(spec: BifurcationSpec, rng: np.random.Generator) -> Programme:
    """Genes with roles, per-gene splicing (beta) and degradation (gamma) rates, switch times."""
    genes = _gene_roles(spec, rng)
    n_genes = len(genes)
    beta = rng.uniform(1.0, 3.0, n_genes)
    gamma = rng.uniform(0.2, 0.9, n_genes)  # below beta: unspliced leads spliced
    high = spec.mean_expression * gamma * rng.uniform(0.5, 2.0, n_genes)  # steady-state s = alpha / gamma
    role = genes["role"].to_numpy()
    tb = spec.branch_time
    switch = np.where(role == "progenitor", rng.uniform(0.15, tb, n_genes), rng.uniform(tb, tb + 0.25, n_genes))
    return Programme(spec, genes.assign(beta=beta, gamma=gamma), switch, high)


def sample_pseudotime(spec: BifurcationSpec, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """``progenitor_fraction`` of the cells before the branch point, the rest after it, uniformly."""
    n_prog = int(round(n_cells * spec.progenitor_fraction))
    tb = spec.branch_time
    return np.concatenate([rng.uniform(0, tb, n_prog), rng.uniform(tb, 1.0, n_cells - n_prog)])


def expected_counts(programme: Programme, fate: np.ndarray, pseudotime: np.ndarray,
                    speed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected (unspliced, spliced, ds/dt) of cells at these fates, pseudotimes and speeds.

    Speeds are used as given (each distinct value integrates the programme once): round them to a
    few levels for many cells. ds/dt = beta u - gamma s is per unit of real time.
    """
    speed = np.ones(len(fate)) if speed is None else np.asarray(speed, dtype=float)
    if np.any(speed <= 0):
        raise ValueError("speeds must be positive")
    step = np.clip(np.round(np.asarray(pseudotime) * (len(GRID) - 1)).astype(int), 0, len(GRID) - 1)
    n_genes = len(programme.genes)
    mean_u = np.empty((len(fate), n_genes))
    mean_s = np.empty((len(fate), n_genes))
    for f in ("alpha", "beta"):
        for v in np.unique(speed[fate == f]):
            cells = (fate == f) & (speed == v)
            u, s = programme.path(f, v)
            mean_u[cells] = u[step[cells]]
            mean_s[cells] = s[step[cells]]
    return mean_u, mean_s, programme.beta * mean_u - programme.gamma * mean_s


def simulate_bifurcation(spec: BifurcationSpec) -> ad.AnnData:
    """Simulate the differentiation; integer ``spliced``/``unspliced`` layers plus the truth.

    obs: ``barcode``, ``pseudotime`` (0..1), ``branch`` (progenitor/alpha/beta), ``fate``
    (alpha/beta: the lineage a progenitor was drawn on), ``dist_to_branch`` (|pseudotime - branch
    point|), ``library_factor``. var: ``symbol``, ``role``, ``fate_driver``, ``beta``, ``gamma``.
    layers: ``spliced``, ``unspliced`` (counts), ``true_spliced``, ``true_unspliced`` (expected
    counts) and ``true_velocity`` (= beta u - gamma s, the expected ds/dt of each cell).
    """
    rng = sample_rng(spec.seed, "bifurcation")
    programme = draw_programme(spec, rng)
    tb = spec.branch_time
    pseudotime = sample_pseudotime(spec, spec.n_cells, rng)
    fate = rng.choice(["alpha", "beta"], size=spec.n_cells)
    branch = np.where(pseudotime < tb, "progenitor", fate)
    library = rng.lognormal(0.0, 0.25, spec.n_cells)
    mean_u, mean_s, _ = expected_counts(programme, fate, pseudotime)
    mean_u *= library[:, None]
    mean_s *= library[:, None]
    velocity = programme.beta * mean_u - programme.gamma * mean_s
    unspliced = rng.poisson(mean_u).astype(np.int32)
    spliced = rng.poisson(mean_s).astype(np.int32)

    order = np.argsort(pseudotime, kind="stable")
    barcodes = random_barcodes(spec.n_cells, rng)
    obs = pd.DataFrame(
        {
            "barcode": barcodes,
            "pseudotime": pseudotime[order],
            "branch": pd.Categorical(branch[order], categories=["progenitor", "alpha", "beta"]),
            "fate": pd.Categorical(fate[order], categories=["alpha", "beta"]),
            "dist_to_branch": np.abs(pseudotime[order] - tb),
            "library_factor": library[order],
        },
        index=pd.Index(barcodes, name="cell_id"),
    )
    adata = ad.AnnData(X=spliced[order].copy(), obs=obs, var=programme.genes.copy())
    adata.layers["spliced"] = spliced[order]
    adata.layers["unspliced"] = unspliced[order]
    adata.layers["true_spliced"] = mean_s[order].astype(np.float32)
    adata.layers["true_unspliced"] = mean_u[order].astype(np.float32)
    adata.layers["true_velocity"] = velocity[order].astype(np.float32)
    adata.uns["simulation"] = {"kind": "bifurcation", "branch_time": tb, "duration": spec.duration, "seed": spec.seed}
    return adata


def lineage_corpus_cells(spec: BifurcationSpec, n_cells: int) -> ad.AnnData:
    """Fresh cells of the same lineage, as a QC'd corpus sample, for the pretraining corpus.

    A foundation model's corpus holds the tissue under study, but not the very cells screened: so
    the programme (genes, rates, switch times) is the one :func:`simulate_bifurcation` draws, and
    the cells are another draw (their own random stream), like another lab's sample of the same
    tissue. The file has what tokenization reads: CSR counts, ``n_counts``, ``filter_pass`` and
    the cell attributes (``cell_type`` = progenitor/alpha/beta).
    """
    import scipy.sparse as sp

    programme = draw_programme(spec, sample_rng(spec.seed, "bifurcation"))
    rng = sample_rng(spec.seed, "lineage_corpus")
    pseudotime = sample_pseudotime(spec, n_cells, rng)
    fate = rng.choice(["alpha", "beta"], size=n_cells)
    library = rng.lognormal(0.0, 0.25, n_cells)
    _, mean_s, _ = expected_counts(programme, fate, pseudotime)
    counts = rng.poisson(mean_s * library[:, None]).astype(np.float32)
    barcodes = random_barcodes(n_cells, rng)
    obs = pd.DataFrame(
        {
            "barcode": barcodes,
            "source": "lineage",
            "sample": "bifurcation",
            "tissue": "endocrine pancreas",
            "cell_type": np.where(pseudotime < spec.branch_time, "progenitor", fate),
            "n_counts": counts.sum(axis=1),
            "n_genes": (counts > 0).sum(axis=1),
            "filter_pass": True,
        },
        index=pd.Index([f"lineage:{b}" for b in barcodes], name="cell_id"),
    )
    var = programme.genes[["symbol"]].copy()
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    adata.uns["simulation"] = {"kind": "lineage_corpus", "seed": spec.seed, "n_cells": n_cells}
    return adata
