"""A differentiation with one fate bifurcation and splicing kinetics, with the truth recorded.

Progenitors (the trunk) move along pseudotime until a branch point, then commit to fate ``alpha``
or ``beta`` (named after pancreatic endocrinogenesis, the VICDYF paper's case; the driver genes
are the real ones: Arx, Irx2... toward alpha, Pdx1, Nkx6-1... toward beta). Each gene follows
the kinetic model du/dt = alpha(t) - beta u, ds/dt = beta u - gamma s with its own rates, so the
true RNA velocity ds/dt of every cell is known, and cells just past the branch point, close in
expression but moving apart, are where the fate is most uncertain.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def simulate_bifurcation(spec: BifurcationSpec) -> ad.AnnData:
    """Simulate the differentiation; integer ``spliced``/``unspliced`` layers plus the truth.

    obs: ``barcode``, ``pseudotime`` (0..1), ``branch`` (progenitor/alpha/beta), ``fate``
    (alpha/beta: the lineage a progenitor was drawn on), ``dist_to_branch`` (|pseudotime - branch
    point|), ``library_factor``. var: ``symbol``, ``role``, ``fate_driver``, ``beta``, ``gamma``.
    layers: ``spliced``, ``unspliced`` (counts), ``true_spliced``, ``true_unspliced`` (expected
    counts) and ``true_velocity`` (= beta u - gamma s, the expected ds/dt of each cell).
    """
    rng = sample_rng(spec.seed, "bifurcation")
    genes = _gene_roles(spec, rng)
    n_genes = len(genes)
    beta = rng.uniform(1.0, 3.0, n_genes)
    gamma = rng.uniform(0.2, 0.9, n_genes)  # below beta: unspliced leads spliced
    high = spec.mean_expression * gamma * rng.uniform(0.5, 2.0, n_genes)  # steady-state s = alpha / gamma
    role = genes["role"].to_numpy()
    tb = spec.branch_time
    switch = np.where(role == "progenitor", rng.uniform(0.15, tb, n_genes), rng.uniform(tb, tb + 0.25, n_genes))

    grid = np.linspace(0.0, 1.0, 2001)
    dt = spec.duration * (grid[1] - grid[0])
    paths = {}
    for fate in ("alpha", "beta"):
        paths[fate] = _integrate(_transcription(genes, grid, fate, spec, switch, high), beta, gamma, dt)

    n_prog = int(round(spec.n_cells * spec.progenitor_fraction))
    pseudotime = np.concatenate([rng.uniform(0, tb, n_prog), rng.uniform(tb, 1.0, spec.n_cells - n_prog)])
    fate = rng.choice(["alpha", "beta"], size=spec.n_cells)
    branch = np.where(pseudotime < tb, "progenitor", fate)
    step = np.clip(np.round(pseudotime * (len(grid) - 1)).astype(int), 0, len(grid) - 1)
    library = rng.lognormal(0.0, 0.25, spec.n_cells)

    mean_u = np.empty((spec.n_cells, n_genes))
    mean_s = np.empty((spec.n_cells, n_genes))
    for f in ("alpha", "beta"):
        cells = fate == f
        mean_u[cells] = paths[f][0][step[cells]]
        mean_s[cells] = paths[f][1][step[cells]]
    mean_u *= library[:, None]
    mean_s *= library[:, None]
    velocity = beta * mean_u - gamma * mean_s
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
    var = genes.assign(beta=beta, gamma=gamma)
    adata = ad.AnnData(X=spliced[order].copy(), obs=obs, var=var)
    adata.layers["spliced"] = spliced[order]
    adata.layers["unspliced"] = unspliced[order]
    adata.layers["true_spliced"] = mean_s[order].astype(np.float32)
    adata.layers["true_unspliced"] = mean_u[order].astype(np.float32)
    adata.layers["true_velocity"] = velocity[order].astype(np.float32)
    adata.uns["simulation"] = {"kind": "bifurcation", "branch_time": tb, "duration": spec.duration, "seed": spec.seed}
    return adata
