"""A second tissue simulator for the environment chain, of a different design from
:mod:`cellfate.simulate.environment`, held out from every choice of the chain's settings.

Where :mod:`~cellfate.simulate.environment` mixes cells into grid spots from smooth densities,
here every cell is a point in the plane and spots capture what falls in them:

- partner cells of each type come from a Thomas cluster process (Poisson parents, Poisson
  offspring scattered around each with a Gaussian kernel) plus a sparse uniform background, so a
  partner lives in discrete patches; lineage cells are a homogeneous Poisson process;
- spots are discs on a hexagonal lattice (Visium-like: radius 0.3 of the pitch, so most of the
  tissue falls between spots), each summing the counts of the cells whose centre lies inside it,
  then thinned by a capture efficiency; the single-cell reference is a separate sample of the
  tissue's cells, captured or not;
- a lineage cell's environment is the *number* of each partner's cells within ``radius`` of it.
  Its fate is alpha with a logistic probability in the driver's count (centred at the tissue's
  median count); its programme runs at a Hill function of that count (``speed_min`` to
  ``speed_max``, half-way at the median count). The driver's ligand (its first marker) targets
  the alpha genes in the ligand-target table;
- the lineage's RNA follows switch-time kinetics with ramped transcription: at each gene's switch
  (programme time) its transcription rate relaxes exponentially to the fate-specific rate, while
  splicing and degradation run in real time. A cell whose programme runs faster therefore has its
  unspliced RNA further ahead of its spliced RNA in the same state, which only its environment
  explains (the signal the environment analysis is judged on);
- every partner induces its own response genes in lineage cells in proportion to its count
  near them (not spliced/unspliced: the dynamics never reads them, the state-blind placement can).

The negative control (``fate_gain = 0``, ``speed_gain = 0``) keeps the same tissue with fate at
random and one pace. Output keys are those the chain reads from
:func:`cellfate.simulate.environment.simulate_environment`'s output.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree

from cellfate.simulate.corpus import sample_rng
from cellfate.simulate.expression import CELL_TYPES
from cellfate.simulate.tissue import true_pair_colocalization

LINEAGE = ["progenitor", "alpha", "beta"]
ROLES = {"early": 10, "alpha": 15, "beta": 15, "constant": 20}


@dataclass(frozen=True)
class PointTissueSpec:
    """Tissue size, point processes, capture, and the driver's effect on fate and pace."""

    size: float = 14.0  # side of the square, in spot pitches
    spot_radius: float = 0.3  # capture disc radius, in pitches
    cell_density: float = 28.0  # cells per squared pitch (about 8 per spot disc)
    lineage_share: float = 0.35
    partners: tuple[str, ...] = ("fibroblast", "macrophage", "T cell")
    driver: str = "fibroblast"
    parents_per_area: float = 0.06  # Thomas process parents
    cluster_sigma: float = 1.0
    background_share: float = 0.15  # of each partner's cells, placed uniformly
    radius: float = 1.0  # neighbourhood in which partner cells are counted
    fate_gain: float = 3.0  # logistic slope per standard deviation of the driver's count
    speed_gain: float = 1.0  # 0: one pace for all; 1: the full Hill range
    speed_min: float = 0.55
    speed_max: float = 1.8
    capture_efficiency: float = 0.3
    min_spot_counts: int = 100  # spots with fewer captured counts are dropped (empty discs)
    n_reference_partner_cells: int = 500
    n_reference_lineage_cells: int = 600
    n_partner_genes: int = 150
    response_genes: int = 6
    response_level: float = 3.0  # mean count of a response gene at the partner's median count
    on_level: float = 10.0  # steady spliced count of an 'on' lineage gene
    seed: int = 0


@dataclass(frozen=True)
class Cells:
    """Every cell of the tissue: position, type index (partners, then the lineage last) and, for
    lineage cells, the partners' counts within the radius."""

    xy: np.ndarray
    kind: np.ndarray
    near: np.ndarray  # cells x partners, counts of partner cells within the radius


def _thomas(spec: PointTissueSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of a Thomas cluster process in the square (with a uniform background share)."""
    area = spec.size**2
    parents = rng.uniform(0, spec.size, size=(max(1, rng.poisson(spec.parents_per_area * area)), 2))
    n_back = rng.binomial(n, spec.background_share)
    kids = parents[rng.integers(len(parents), size=4 * (n - n_back))]
    kids = kids + rng.normal(0, spec.cluster_sigma, size=kids.shape)
    kids = kids[np.all((kids >= 0) & (kids < spec.size), axis=1)][:n - n_back]
    while len(kids) < n - n_back:  # rare: most offspring fell outside
        kids = np.r_[kids, _thomas(spec, n - n_back - len(kids), rng)]
    return np.r_[kids, rng.uniform(0, spec.size, size=(n_back, 2))]


def _least_correlated(spec: PointTissueSpec, rng: np.random.Generator, tries: int = 10) -> list[np.ndarray]:
    """Partner point sets, the layout of ``tries`` whose partners' local counts correlate least:
    a decoy whose patches sat on the driver's would explain the fates as well as the driver."""
    n_each = rng.poisson(spec.cell_density * (1 - spec.lineage_share) * spec.size**2 / len(spec.partners),
                         size=len(spec.partners))
    grid = np.stack(np.meshgrid(*[np.arange(0.5, spec.size, 1.0)] * 2), -1).reshape(-1, 2)
    best, best_worst = None, np.inf
    for _ in range(tries):
        sets = [_thomas(spec, n, rng) for n in n_each]
        counts = np.stack([np.log1p(cKDTree(s).query_ball_point(grid, spec.radius, return_length=True))
                           for s in sets], 1)
        worst = np.abs(np.corrcoef(counts.T)[np.triu_indices(len(sets), 1)]).max() if len(sets) > 1 else 0.0
        if worst < best_worst:
            best, best_worst = sets, worst
    return best


def draw_cells(spec: PointTissueSpec, rng: np.random.Generator) -> Cells:
    """All cells of the tissue and each cell's partner counts within the radius."""
    sets = _least_correlated(spec, rng)
    n_lin = rng.poisson(spec.cell_density * spec.lineage_share * spec.size**2)
    xy = np.concatenate(sets + [rng.uniform(0, spec.size, size=(n_lin, 2))])
    kind = np.repeat(np.arange(len(sets) + 1), [len(s) for s in sets] + [n_lin])
    near = np.stack([cKDTree(s).query_ball_point(xy, spec.radius, return_length=True) for s in sets], 1)
    near = near - (kind[:, None] == np.arange(len(sets))[None, :])  # a partner cell does not count itself
    return Cells(xy=xy, kind=kind, near=near)


def local_density(spec: PointTissueSpec, count: np.ndarray) -> np.ndarray:
    """Partner cells per squared pitch within the radius, with half a cell added: the chain's
    true-density control takes its log, and a count is often 0 here (partners live in patches)."""
    return (np.asarray(count, dtype=float) + 0.5) / (np.pi * spec.radius**2)


def hex_spots(spec: PointTissueSpec) -> np.ndarray:
    """Spot centres on a hexagonal lattice of pitch 1 inside the square."""
    rows = np.arange(0.5, spec.size, np.sqrt(3) / 2)
    return np.array([(x + (0.5 if r % 2 else 0.0), y) for r, y in enumerate(rows)
                     for x in np.arange(0.5, spec.size - 0.5, 1.0)])


def fate_and_pace(spec: PointTissueSpec, driver_count: np.ndarray,
                  reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chance of fate alpha, pace) of lineage cells with these driver counts; ``reference`` is the
    counts of all the tissue's lineage cells, which set the logistic's centre and scale and the
    Hill function's half-way count, so both act on the count itself, not on its rank."""
    centre, scale = float(np.median(reference)), max(float(reference.std()), 1e-9)
    p_alpha = 1.0 / (1.0 + np.exp(-spec.fate_gain * (driver_count - centre) / scale))
    hill = driver_count**2 / (driver_count**2 + max(centre, 1.0) ** 2)
    speed = 1.0 + spec.speed_gain * (spec.speed_min + (spec.speed_max - spec.speed_min) * hill - 1.0)
    return p_alpha, speed


@dataclass(frozen=True)
class Kinetics:
    """The lineage programme: each gene's role, fate-specific rates, switch times (programme time)
    and real-time splicing and degradation rates."""

    genes: pd.DataFrame
    rate: np.ndarray  # genes x fates (alpha, beta): transcription when on
    switch: np.ndarray  # genes: programme time of the switch (on for fate genes, off for early genes)
    beta: np.ndarray
    gamma: np.ndarray
    commit: float = 3.0
    horizon: float = 10.0
    ramp: float = 0.8  # per programme time: how fast transcription relaxes after a switch


def draw_kinetics(spec: PointTissueSpec, rng: np.random.Generator) -> Kinetics:
    """Genes of the programme (ids ``lin_*``, symbols ``Lin*``) with drawn rates and switches."""
    role = np.repeat(list(ROLES), list(ROLES.values()))
    n = len(role)
    gamma = rng.uniform(0.3, 1.0, n)
    level = spec.on_level * rng.lognormal(0, 0.3, n)
    rate = np.zeros((n, 2))
    rate[role == "alpha", 0] = rate[role == "beta", 1] = 1.0
    rate[np.isin(role, ["early", "constant"])] = 1.0
    rate *= (level * gamma)[:, None]
    switch = np.where(role == "early", 3.0 + rng.uniform(0, 2, n), 3.0 + rng.uniform(0, 4, n))
    genes = pd.DataFrame({"symbol": [f"Lin{r.capitalize()}{i:02d}" for i, r in enumerate(role)], "role": role},
                         index=pd.Index([f"lin_{i:03d}" for i in range(n)], name="gene_id"))
    return Kinetics(genes, rate, switch, rng.uniform(1.0, 3.0, n), gamma)


def expected_rna(kin: Kinetics, fate: np.ndarray, tau: np.ndarray, speed: np.ndarray,
                 dt: float = 0.02) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unspliced, spliced, ds/dt in real time), cells x genes, at programme times ``tau``.

    Transcription is a function of programme time; splicing and degradation act in real time,
    so in programme time du/dtau = (a - beta u) / speed. Euler steps of ``dt`` in programme time,
    all cells at once, each cell read off when the clock passes its own ``tau``.
    """
    role = kin.genes["role"].to_numpy()
    target = kin.rate[:, (fate == "beta").astype(int)].T  # cells x genes
    steady = np.isin(role, ["early", "constant"])
    a = np.where(steady, target, 0.0)
    u, s = a / kin.beta, a / kin.gamma
    out_u, out_s, out_a = np.zeros_like(u), np.zeros_like(u), np.zeros_like(u)
    fate_gene, early = np.isin(role, ["alpha", "beta"]), role == "early"
    inv = (1.0 / speed)[:, None]
    for step in range(int(np.ceil(tau.max() / dt)) + 1):
        t = step * dt
        done = (tau >= t) & (tau < t + dt)
        out_u[done], out_s[done], out_a[done] = u[done], s[done], a[done]
        goal = np.where(fate_gene & (t >= kin.switch), target, np.where(early & (t >= kin.switch), 0.0, a))
        goal = np.where(steady & ~early, target, goal)
        a = a + kin.ramp * (goal - a) * dt * (fate_gene | early)
        u, s = u + (a - kin.beta * u) * inv * dt, s + (kin.beta * u - kin.gamma * s) * inv * dt
    return out_u, out_s, (kin.beta * out_u - kin.gamma * out_s) * speed[:, None]


@dataclass(frozen=True)
class Genes:
    """The tissue's genes: partner profiles (types x partner genes), the programme and each
    partner's response genes (columns of the partner genes, none a marker)."""

    table: pd.DataFrame
    profiles: np.ndarray
    kinetics: Kinetics
    response: list[np.ndarray]


def draw_genes(spec: PointTissueSpec, rng: np.random.Generator) -> Genes:
    """Partner genes (each type's markers high in it, a few random genes up or down), the
    lineage programme, and response genes drawn among the partners' non-marker genes."""
    markers = [m for p in spec.partners for m in CELL_TYPES[p]["markers"]]
    symbols = markers + [f"Gene{i:03d}" for i in range(spec.n_partner_genes - len(markers))]
    base = rng.gamma(0.6, 1.0, len(symbols))
    profiles = np.tile(base, (len(spec.partners), 1))
    for k, p in enumerate(spec.partners):
        profiles[k, [symbols.index(m) for m in CELL_TYPES[p]["markers"]]] += 8.0 * base.mean()
        picked = rng.choice(np.arange(len(markers), len(symbols)), size=15, replace=False)
        profiles[k, picked] *= np.exp(rng.normal(0, 1.0, 15))
    profiles /= profiles.sum(1, keepdims=True)
    kinetics = draw_kinetics(spec, rng)
    free = rng.choice(np.arange(len(markers), len(symbols)), size=len(spec.partners) * spec.response_genes,
                      replace=False)
    response = [free[k * spec.response_genes:(k + 1) * spec.response_genes] for k in range(len(spec.partners))]
    table = pd.concat([pd.DataFrame({"symbol": symbols}, index=pd.Index([f"pt_{i:03d}" for i in range(len(symbols))],
                                                                         name="gene_id")),
                       kinetics.genes[["symbol"]]]).assign(is_mitochondrial=False)
    return Genes(table, profiles, kinetics, response)


def partner_counts(genes: Genes, kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cells x partner genes: gamma-Poisson counts (dispersion 0.2) of each type's profile."""
    library = rng.lognormal(np.log(2000.0), 0.4, len(kind))
    mean = genes.profiles[kind] * library[:, None]
    return rng.poisson(rng.gamma(5.0, mean / 5.0)).astype(np.int32)


def lineage_counts(spec: PointTissueSpec, genes: Genes, near: np.ndarray, tissue_near: np.ndarray,
                   rng: np.random.Generator) -> dict:
    """Lineage cells with these partner counts: fate, pace, programme time, integer spliced and
    unspliced counts, true velocity, and their response-gene counts (cells x partner genes).
    ``tissue_near`` is the partner counts of all the tissue's lineage cells (the scale of both)."""
    k = list(spec.partners).index(spec.driver)
    p_alpha, speed = fate_and_pace(spec, near[:, k].astype(float), tissue_near[:, k].astype(float))
    fate = np.where(rng.random(len(near)) < p_alpha, "alpha", "beta")
    kin = genes.kinetics
    tau = rng.uniform(0, kin.horizon, len(near))
    u, s, v = expected_rna(kin, fate, tau, speed)
    library = rng.lognormal(0.0, 0.25, len(near))[:, None]
    response = np.zeros((len(near), len(genes.profiles[0])), dtype=np.int32)
    for j, cols in enumerate(genes.response):
        median = max(float(np.median(tissue_near[:, j])), 1.0)
        mean = spec.response_level * (near[:, j] + 0.5) / median
        response[:, cols] = rng.poisson(np.repeat(mean[:, None], len(cols), 1))
    return {"unspliced": rng.poisson(u * library).astype(np.int32),
            "spliced": rng.poisson(s * library).astype(np.int32),
            "velocity": (v * library).astype(np.float32), "fate": fate, "speed": speed, "p_alpha": p_alpha,
            "tau": tau, "branch": np.where(tau < kin.commit, "progenitor", fate), "response": response}


def cell_counts(spec: PointTissueSpec, genes: Genes, cells: Cells, idx: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Cells x all genes (spliced + unspliced for the lineage) of the cells ``idx``, and the
    lineage part's details (rows of the lineage cells among ``idx``, in order)."""
    n_part, n_pg = len(spec.partners), len(genes.profiles[0])
    kind = cells.kind[idx]
    x = np.zeros((len(idx), len(genes.table)), dtype=np.int32)
    is_part = kind < n_part
    x[is_part, :n_pg] = partner_counts(genes, kind[is_part], rng)
    tissue_near = cells.near[cells.kind == n_part]
    lin = lineage_counts(spec, genes, cells.near[idx[~is_part]], tissue_near, rng)
    x[~is_part, n_pg:] = lin["spliced"] + lin["unspliced"]
    x[~is_part, :n_pg] += lin["response"]
    return x, lin


def spot_data(spec: PointTissueSpec, genes: Genes, cells: Cells, rng: np.random.Generator) -> ad.AnnData:
    """Hexagonal disc spots summing the cells inside them, thinned by the capture efficiency,
    with the true abundance of every type (partners and lineage states) per spot."""
    centres = hex_spots(spec)
    inside = cKDTree(centres).query_ball_point(cells.xy, spec.spot_radius)
    spot_of = np.array([v[0] if v else -1 for v in inside])
    idx = np.flatnonzero(spot_of >= 0)
    x, lin = cell_counts(spec, genes, cells, idx, rng)
    n_part = len(spec.partners)
    counts = np.zeros((len(centres), x.shape[1]), dtype=np.int64)
    np.add.at(counts, spot_of[idx], x)
    types = list(spec.partners) + LINEAGE
    label = np.array([types[k] for k in cells.kind[idx]], dtype=object)
    label[cells.kind[idx] == n_part] = lin["branch"]
    abundance = np.zeros((len(centres), len(types)))
    np.add.at(abundance, (spot_of[idx], pd.Index(types).get_indexer(label)), 1)
    truth = true_pair_colocalization(abundance)
    pairs = sorted({tuple(sorted((types[a], types[b]))) for a in range(len(types)) for b in range(len(types))
                    if a != b and truth[a, b] > 1.0})
    tree = [cKDTree(cells.xy[cells.kind == k]) for k in range(n_part)]
    density = np.stack([t.query_ball_point(centres, spec.radius, return_length=True) for t in tree], 1)
    names = pd.Index([f"spot_{i:04d}" for i in range(len(centres))], name="spot_id")
    obs = pd.DataFrame({"n_cells_true": abundance.sum(1).astype(int),
                        "driver_density": density[:, list(spec.partners).index(spec.driver)]}, index=names)
    spots = ad.AnnData(X=sp.csr_matrix(rng.binomial(counts, spec.capture_efficiency).astype(np.int32)), obs=obs,
                       var=genes.table.copy())
    spots.obsm["spatial"] = centres
    spots.obsm["true_abundance"] = abundance.astype(np.float32)
    spots.obsm["true_partner_density"] = pd.DataFrame(local_density(spec, density), index=names,
                                                      columns=list(spec.partners))
    spots.uns["cell_types"] = np.asarray(types)
    spots.uns["true_pair_colocalization"] = truth
    spots.uns["colocalized_pairs"] = np.asarray(pairs) if pairs else np.empty((0, 2), dtype=str)
    return spots


def reference_data(spec: PointTissueSpec, genes: Genes, cells: Cells, spots: ad.AnnData,
                   rng: np.random.Generator) -> ad.AnnData:
    """A dissociated sample of the tissue's cells (partners, then lineage), with the lineage's
    layers, fate, pace, nearest spot (``home_spot``) and true partner counts within the radius."""
    n_part = len(spec.partners)
    part = rng.choice(np.flatnonzero(cells.kind < n_part), spec.n_reference_partner_cells, replace=False)
    lineage = rng.choice(np.flatnonzero(cells.kind == n_part), spec.n_reference_lineage_cells, replace=False)
    idx = np.r_[part, lineage]
    x, lin = cell_counts(spec, genes, cells, idx, rng)
    n_ref, n_pg = len(idx), len(genes.profiles[0])
    layers = {key: np.zeros((n_ref, x.shape[1]), dtype=np.float32 if key == "true_velocity" else np.int32)
              for key in ("spliced", "unspliced", "true_velocity")}
    for key, value in (("spliced", lin["spliced"]), ("unspliced", lin["unspliced"]),
                       ("true_velocity", lin["velocity"])):
        layers[key][len(part):, n_pg:] = value
    home = cKDTree(spots.obsm["spatial"]).query(cells.xy[lineage])[1]
    blank = np.full(len(part), np.nan)
    types = list(spec.partners) + LINEAGE
    obs = pd.DataFrame({
        "cell_type": pd.Categorical([types[k] for k in cells.kind[part]] + list(lin["branch"]), categories=types),
        "is_lineage": np.r_[np.zeros(len(part), bool), np.ones(len(lineage), bool)],
        "fate": np.r_[np.full(len(part), ""), lin["fate"]], "pseudotime": np.r_[blank, lin["tau"]],
        "speed": np.r_[blank, lin["speed"]], "home_spot": np.r_[np.full(len(part), ""), spots.obs_names[home]],
        "true_p_alpha": np.r_[blank, lin["p_alpha"]], "niche_chooser": np.r_[np.zeros(len(part), bool),
                                                                             np.ones(len(lineage), bool)],
    }, index=pd.Index([f"ptcell_{i:05d}" for i in range(n_ref)], name="cell_id"))
    reference = ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=genes.table.copy())
    for key, value in layers.items():
        reference.layers[key] = sp.csr_matrix(value)
    near = np.full((n_ref, n_part), np.nan)
    near[len(part):] = local_density(spec, cells.near[lineage])
    reference.obsm["true_partner_density"] = pd.DataFrame(near, index=reference.obs_names, columns=list(spec.partners))
    reference.obsm["true_position"] = cells.xy[idx]  # not 'spatial': a dissociated reference has no place
    return reference


def ligand_target(spec: PointTissueSpec, genes: Genes, rng: np.random.Generator) -> pd.DataFrame:
    """Targets x ligands (each partner's first marker): the driver's ligand targets the alpha genes
    and its own response genes; every other ligand a random set of constant genes and its
    response genes; a small background elsewhere."""
    ligands = [CELL_TYPES[p]["markers"][0] for p in spec.partners]
    symbols = genes.table["symbol"].to_numpy()
    table = pd.DataFrame(rng.exponential(0.02, size=(len(symbols), len(ligands))),
                         index=pd.Index(symbols, name="target"), columns=ligands)
    role = genes.kinetics.genes.set_index("symbol")["role"]
    alpha, constant = role.index[role == "alpha"].to_numpy(), role.index[role == "constant"].to_numpy()
    for k, (partner, ligand) in enumerate(zip(spec.partners, ligands)):
        hits = alpha if partner == spec.driver else rng.choice(constant, size=len(alpha), replace=False)
        for gene in list(hits) + list(symbols[genes.response[k]]):
            table.loc[gene, ligand] = rng.uniform(0.6, 1.0)
    return table.round(4)


def simulate_point_tissue(spec: PointTissueSpec = PointTissueSpec()) -> tuple[ad.AnnData, ad.AnnData, pd.DataFrame]:
    """Return ``(spots, reference, ligand_target)`` in the layout of
    :func:`cellfate.simulate.environment.simulate_environment`, so the same chain reads it."""
    # one stream per part: both controls then share the tissue, the spots' cells and the reference's
    rng = {part: sample_rng(spec.seed, f"point_tissue/{part}") for part in ("cells", "spots", "reference", "table")}
    cells = draw_cells(spec, rng["cells"])
    genes = draw_genes(spec, rng["cells"])
    spots = spot_data(spec, genes, cells, rng["spots"])
    spots = spots[np.asarray(spots.X.sum(1)).ravel() >= spec.min_spot_counts].copy()  # as real data is filtered
    reference = reference_data(spec, genes, cells, spots, rng["reference"])
    table = ligand_target(spec, genes, rng["table"])
    lineage_near = cells.near[cells.kind == len(spec.partners)]
    p_alpha, _ = fate_and_pace(spec, lineage_near[:, list(spec.partners).index(spec.driver)].astype(float),
                               lineage_near[:, list(spec.partners).index(spec.driver)].astype(float))
    share = float(p_alpha.mean())
    truth = {"driver": spec.driver, "partners": np.asarray(spec.partners), "fate_gain": spec.fate_gain,
             "speed_gain": spec.speed_gain,
             "niche_genes": {p: genes.table.index[c].to_numpy() for p, c in zip(spec.partners, genes.response)},
             "driver_ligand": CELL_TYPES[spec.driver]["markers"][0],
             "fate_share": {"alpha": share, "beta": 1.0 - share}, "intervention": "none",
             "simulator": "tissue_points"}
    spots.uns["environment_truth"] = truth
    reference.uns["environment_truth"] = truth
    return spots, reference, table
