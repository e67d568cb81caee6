"""A tissue where a partner cell type drives a fate choice, with the truth recorded.

Partner cell types (fibroblasts, macrophages, T cells by default) each have their own smooth
spatial density (seeded Gaussian bumps). A differentiating lineage (the bifurcation simulator's
programme: progenitors branching into ``alpha`` and ``beta``, with spliced/unspliced counts) is
spread evenly, and one partner, the *driver*, acts on it through its standardised local log
density a:

- fate: a lineage cell becomes ``alpha`` with probability sigmoid(``fate_gain`` * a);
- pace: the cell runs its programme ``exp(speed_gain * a)`` times faster than the base pace.

The first alone leaves nothing for a dynamics model to find beyond the cell's own state: the
fate shows in spliced RNA as soon as it shows at all, so the drift needs no environment to predict
it (giving the true fate as the condition did not lower the unspliced likelihood). The second is
what a signal that pushes cells along a fate looks like in RNA velocity: cells in the same state
move faster where the driver is dense, so their unspliced RNA runs ahead of their spliced RNA by an
amount only the environment explains. That is the effect the environment analysis is judged on.

Outputs are shaped like :mod:`cellfate.simulate.tissue`'s (spots with ``obsm['true_abundance']``,
``uns['cell_types']``, ``uns['true_pair_colocalization']``, ``uns['colocalized_pairs']``; a
reference with ``obs['cell_type']``), plus for the reference's lineage cells ``layers['spliced']``,
``layers['unspliced']`` and ``layers['true_velocity']``, their home spot, pace (``obs['speed']``)
and true partner densities, and a simulated ligand-target matrix in which the driver's ligand (its
first marker) targets the alpha-fate genes. Spots and reference draw their lineage cells
independently from the same gene programme.

For the forward analysis the same tissue can be simulated under an :class:`Intervention` (a
partner removed or strengthened, or its ligand blocked, before any cell chooses), and the tissue's
true fate proportions are recorded (``uns['environment_truth']['fate_share']``;
:func:`true_fate_share` computes them without drawing cells). With ``insensitive_share`` > 0, that
share of the lineage cells ignores the niche (random fate, base pace) and lacks a receptor
programme, so the environment's part of a progenitor's fate uncertainty can be validated.
With ``driver_subpopulation`` > 0, that share of the driver's cells is a sub-population with its
own density and marker genes, and only its density sets fate and pace (the rest of the driver's
cells do nothing): the truth for the ``clusters`` condition, which must name that sub-population
(reference ``obs['driver_subpopulation']``, spots ``obs['subpopulation_density']`` and
``obs['true_subpopulation_cells']``, ``uns['environment_truth']['subpopulation_genes']``).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.simulate.bifurcation import (BifurcationSpec, Programme, draw_programme, expected_counts,
                                           sample_pseudotime)
from cellfate.simulate.corpus import corpus_model, sample_rng
from cellfate.simulate.expression import CELL_TYPES
from cellfate.simulate.tissue import true_pair_colocalization

LINEAGE = ["progenitor", "alpha", "beta"]


@dataclass(frozen=True)
class EnvironmentSpec:
    """Grid, partner types, the driver and the fate's sensitivity to it."""

    grid: tuple[int, int] = (15, 15)
    partners: tuple[str, ...] = ("fibroblast", "macrophage", "T cell")
    driver: str = "fibroblast"
    fate_gain: float = 3.0
    speed_gain: float = 0.6  # log pace per standard deviation of the driver's log density
    lineage_share: float = 0.35  # of the cells in a spot, on average
    cells_per_spot: float = 8.0
    capture_efficiency: float = 0.3
    n_reference_partner_cells: int = 500
    n_reference_lineage_cells: int = 600
    n_genes: int = 150  # partner expression model
    n_dynamic_genes: int = 60  # the lineage's genes (bifurcation simulator)
    lineage_expression: float = 10.0  # spliced count of an 'on' gene (at 40, DeepCOLOR's VAE merged the partner types)
    # Niche genes: lineage cells express each partner's own set more where that partner is dense
    # (whether or not the partner changes their fate). They are what lets a cell-level map place a
    # lineage cell beyond its dynamic state; they are not among the lineage's spliced/unspliced
    # layers, so the dynamics model does not see them (its state z is the programme's alone).
    niche_genes: int = 6
    niche_level: float = 3.0  # mean count of a niche gene at the partner's median density
    niche_fold: float = 1.0  # log fold change per standard deviation of the partner's log density
    # Lineage cells that ignore the niche: they choose their fate at random, keep the base pace
    # and lack the 'receptor' (the first ``n_receptor_genes`` constant genes of the programme at a
    # tenth), so their state tells them apart. 0 (the default) draws nothing: the tissue is as before.
    insensitive_share: float = 0.0
    n_receptor_genes: int = 5
    # A sub-population of the driver's cells: this share of them (tissue-wide) with its own spatial
    # density and a few marker genes of its own, and only its density acts on the lineage (the rest
    # of the driver's cells do nothing). It is what the ``clusters`` condition must find. 0 (the
    # default) draws nothing: the tissue is as before.
    driver_subpopulation: float = 0.0
    subpopulation_markers: int = 5
    subpopulation_marker_level: float = 0.005  # expected count of a marker, as a share of the cell's library
    seed: int = 0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _densities(spec: EnvironmentSpec, xy: np.ndarray, rng: np.random.Generator, tries: int = 20) -> np.ndarray:
    """Spots x partners: smooth positive densities, three bumps each, scaled to max 1.

    Of ``tries`` seeded layouts the one whose partners are least correlated is kept: a partner
    that happens to mirror the driver would be an equally good explanation of the fates, and
    then no analysis could tell which one drives them.
    """
    nx, ny = spec.grid
    sigma = max(nx, ny) / 7.0
    best, best_corr = None, np.inf
    for _ in range(tries):
        out = []
        for _ in spec.partners:
            centres = rng.uniform([0, 0], [nx, ny], size=(3, 2))
            f = np.exp(-((xy[:, None, :] - centres[None]) ** 2).sum(-1) / (2 * sigma**2)).sum(1)
            out.append(0.03 + f / f.max())
        density = np.stack(out, axis=1)
        corr = np.corrcoef(np.log(density).T)
        worst = np.abs(corr[np.triu_indices(len(spec.partners), 1)]).max() if len(spec.partners) > 1 else 0.0
        if worst < best_corr:
            best, best_corr = density, worst
    return best


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(x.std(), 1e-12)


def pace(spec: EnvironmentSpec, driver_z: np.ndarray) -> np.ndarray:
    """Each cell's pace from its spot's standardised driver density, on a grid of 0.05 in log
    (each distinct pace integrates the programme once)."""
    log_speed = spec.speed_gain * np.clip(driver_z, -3.0, 3.0)
    return np.exp(np.round(log_speed / 0.05) * 0.05)


def niche_counts(spec: EnvironmentSpec, log_density_z: np.ndarray, niche_cols: list[np.ndarray], n_genes: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Cells x genes counts of each partner's niche genes for lineage cells whose homes have these
    standardised log partner densities (cells x partners)."""
    out = np.zeros((len(log_density_z), n_genes), dtype=np.int32)
    for k, cols in enumerate(niche_cols):
        mean = spec.niche_level * np.exp(spec.niche_fold * np.clip(log_density_z[:, k], -3, 3))
        out[:, cols] = rng.poisson(np.repeat(mean[:, None], len(cols), axis=1))
    return out


def insensitive_cells(spec: EnvironmentSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """Which of ``n`` lineage cells ignore the niche (no draw at all when none may)."""
    if spec.insensitive_share <= 0:
        return np.zeros(n, dtype=bool)
    return rng.random(n) < spec.insensitive_share


def lineage_cells(programme: Programme, fate: np.ndarray, speed: np.ndarray, rng: np.random.Generator,
                  silenced: np.ndarray | None = None, n_receptor_genes: int = 0) -> dict:
    """Counts of lineage cells with these fates and paces: pseudotimes drawn as the bifurcation
    simulator draws them, a library factor each; integer ``spliced``/``unspliced``, the expected
    ``velocity`` (ds/dt), ``pseudotime`` and ``branch`` (progenitor before the branch point).
    ``silenced`` cells have the receptor genes (the first constant ones) at a tenth."""
    n = len(fate)
    pseudotime = rng.permutation(sample_pseudotime(programme.spec, n, rng))
    library = rng.lognormal(0.0, 0.25, n)[:, None]
    mean_u, mean_s, velocity = expected_counts(programme, fate, pseudotime, speed)
    if silenced is not None and silenced.any() and n_receptor_genes > 0:
        receptor = np.flatnonzero(programme.genes["role"].to_numpy() == "constant")[:n_receptor_genes]
        for array in (mean_u, mean_s, velocity):
            array[np.ix_(silenced, receptor)] *= 0.1
    branch = np.where(pseudotime < programme.spec.branch_time, "progenitor", fate)
    return {"unspliced": rng.poisson(mean_u * library).astype(np.int32),
            "spliced": rng.poisson(mean_s * library).astype(np.int32),
            "velocity": (velocity * library).astype(np.float32), "pseudotime": pseudotime, "branch": branch}


def ligand_target(spec: EnvironmentSpec, lineage_genes: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Targets x ligands: the driver's first marker targets the alpha-fate genes; every other
    partner's first marker targets random constant genes (decoys); small background elsewhere."""
    ligands = [CELL_TYPES[p]["markers"][0] for p in spec.partners]
    targets = sorted(set(lineage_genes["symbol"]) | {m for p in spec.partners for m in CELL_TYPES[p]["markers"]})
    table = pd.DataFrame(rng.exponential(0.02, size=(len(targets), len(ligands))),
                         index=pd.Index(targets, name="target"), columns=ligands)
    alpha = lineage_genes.loc[lineage_genes["role"] == "alpha", "symbol"]
    constant = lineage_genes.loc[lineage_genes["role"] == "constant", "symbol"].to_numpy()
    for partner, ligand in zip(spec.partners, ligands):
        hits = alpha if partner == spec.driver else rng.choice(constant, size=min(len(alpha), len(constant)), replace=False)
        for gene in hits:
            table.loc[gene, ligand] = rng.uniform(0.6, 1.0)
    return table.round(4)


@dataclass(frozen=True)
class Intervention:
    """A change to the tissue, applied before any cell chooses its fate.

    ``remove``: the partner's cells are gone (its signal falls to the background level
    ``SIGNAL_FLOOR`` everywhere); ``scale``: its density is multiplied by ``factor``;
    ``block_ligand``: the partner whose ligand (first marker) it is keeps its cells, but its signal
    falls to the background. The standardisation of the signal stays the untreated tissue's: a
    signal is an absolute amount, not a rank.
    """

    kind: str
    partner: str | None = None
    factor: float = 2.0
    ligand: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("remove", "scale", "block_ligand"):
            raise ValueError(f"unknown intervention kind {self.kind!r} (remove, scale, block_ligand)")
        if self.kind == "block_ligand" and not self.ligand:
            raise ValueError("a block_ligand intervention needs a ligand")
        if self.kind != "block_ligand" and not self.partner:
            raise ValueError(f"a {self.kind} intervention needs a partner")
        if self.kind == "scale" and self.factor <= 0:
            raise ValueError("a scale intervention needs a positive factor")


SIGNAL_FLOOR = 0.03  # the densities' background level (see _densities)


@dataclass(frozen=True)
class Layout:
    """Spots, the partners' densities where they live (``present``) and the signal each sends
    (``signal``, standardised log, ``log_z``), and each spot's chance of fate alpha."""

    xy: np.ndarray
    present: np.ndarray
    log_z: np.ndarray
    p_alpha: np.ndarray
    driver_z: np.ndarray  # the standardised log signal that sets fate and pace
    sub_share: np.ndarray | None = None  # per spot, the driver's cells' share that is the sub-population
    sub_density: np.ndarray | None = None


def _intervene(spec: EnvironmentSpec, density: np.ndarray,
               intervention: Intervention | None) -> tuple[np.ndarray, np.ndarray]:
    """(present, signal) densities under ``intervention`` (both the density itself without one)."""
    present, signal = density.copy(), density.copy()
    if intervention is None:
        return present, signal
    if intervention.kind == "block_ligand":
        senders = [k for k, p in enumerate(spec.partners) if CELL_TYPES[p]["markers"][0] == intervention.ligand]
        signal[:, senders] = SIGNAL_FLOOR
        return present, signal
    if intervention.partner not in spec.partners:
        raise ValueError(f"intervention partner {intervention.partner!r} is not among the partners {spec.partners}")
    k = spec.partners.index(intervention.partner)
    if intervention.kind == "remove":
        present[:, k], signal[:, k] = 0.0, SIGNAL_FLOOR
    else:
        present[:, k] *= intervention.factor
        signal[:, k] *= intervention.factor
    return present, signal


def _subpopulation(spec: EnvironmentSpec, xy: np.ndarray, density: np.ndarray, rng: np.random.Generator,
                   tries: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(partner densities with the sub-population added to the driver's, its share of the driver's
    cells per spot, its own density). Its layout is the least correlated with every partner's of
    ``tries``: a sub-population that sat where its type does could not be told from the type."""
    nx, ny = spec.grid
    sigma = max(nx, ny) / 7.0
    best, best_corr = None, np.inf
    for _ in range(tries):
        centres = rng.uniform([0, 0], [nx, ny], size=(3, 2))
        f = np.exp(-((xy[:, None, :] - centres[None]) ** 2).sum(-1) / (2 * sigma**2)).sum(1)
        sub = SIGNAL_FLOOR + f / f.max()
        worst = max(abs(np.corrcoef(np.log(sub), np.log(d))[0, 1]) for d in density.T)
        if worst < best_corr:
            best, best_corr = sub, worst
    k, share = spec.partners.index(spec.driver), spec.driver_subpopulation
    rest, sub = (1.0 - share) * density[:, k], share * best
    out = density.copy()
    out[:, k] = rest + sub
    return out, sub / out[:, k], best


def tissue_layout(spec: EnvironmentSpec, rng: np.random.Generator, intervention: Intervention | None = None) -> Layout:
    """The spots and partner densities (the first draws of ``rng``) and what they do to the fate.
    With a driver sub-population, its density (not the driver type's) is the signal."""
    if spec.driver not in spec.partners:
        raise ValueError(f"driver {spec.driver!r} is not among the partners {spec.partners}")
    if not 0.0 <= spec.driver_subpopulation < 1.0:
        raise ValueError("driver_subpopulation must be in [0, 1)")
    if spec.driver_subpopulation > 0 and intervention is not None:
        raise ValueError("interventions are not simulated for a tissue with a driver sub-population")
    nx, ny = spec.grid
    xy = np.array([(x, y) for y in range(ny) for x in range(nx)], dtype=float)
    density = _densities(spec, xy, rng)
    sub_share = sub_density = None
    if spec.driver_subpopulation > 0:
        density, sub_share, sub_density = _subpopulation(spec, xy, density, rng)
    log_base = np.log(density)
    mean, sd = log_base.mean(0), np.maximum(log_base.std(0), 1e-12)
    present, signal = _intervene(spec, density, intervention)
    log_z = (np.log(signal) - mean) / sd
    driver_z = log_z[:, spec.partners.index(spec.driver)] if sub_density is None else _standardise(np.log(sub_density))
    return Layout(xy=xy, present=present, log_z=log_z, p_alpha=_sigmoid(spec.fate_gain * driver_z),
                  driver_z=driver_z, sub_share=sub_share, sub_density=sub_density)


def true_fate_share(spec: EnvironmentSpec, intervention: Intervention | None = None) -> dict[str, float]:
    """The tissue's expected fate proportions (lineage cells are spread evenly over the spots),
    exactly what :func:`simulate_environment` records, without drawing the cells."""
    layout = tissue_layout(spec, sample_rng(spec.seed, "environment"), intervention)
    share = (1.0 - spec.insensitive_share) * float(layout.p_alpha.mean()) + spec.insensitive_share * 0.5
    return {"alpha": share, "beta": 1.0 - share}


@dataclass(frozen=True)
class GeneSpace:
    """The tissue's genes and where each part of the simulation writes its counts."""

    genes: pd.DataFrame
    model: object  # the partners' expression model (cellfate.simulate.corpus)
    programme: Programme
    part_cols: np.ndarray
    lin_cols: np.ndarray
    niche_cols: list[np.ndarray]
    sub_local: np.ndarray  # the sub-population's marker genes, as columns of the partner model's genes


def _gene_space(spec: EnvironmentSpec, rng: np.random.Generator) -> GeneSpace:
    """Partner genes, the lineage programme's genes and each partner's niche genes."""
    model = corpus_model(list(spec.partners), spec.n_genes, spec.seed)
    programme = draw_programme(BifurcationSpec(n_genes=spec.n_dynamic_genes, mean_expression=spec.lineage_expression,
                                               seed=spec.seed), rng)
    lineage_genes = programme.genes
    genes = pd.concat([model.genes, lineage_genes[["symbol"]].assign(is_mitochondrial=False)])
    genes = genes[~genes.index.duplicated()]
    part_cols = genes.index.get_indexer(model.genes.index)
    lin_cols = genes.index.get_indexer(lineage_genes.index)
    markers = {m for p in CELL_TYPES.values() for m in p["markers"]}
    free = np.setdiff1d(part_cols[~model.genes["symbol"].isin(markers).to_numpy()
                                  & ~model.genes["is_mitochondrial"].to_numpy()], lin_cols)
    picked = rng.choice(free, size=len(spec.partners) * spec.niche_genes, replace=False)
    niche_cols = [picked[k * spec.niche_genes:(k + 1) * spec.niche_genes] for k in range(len(spec.partners))]
    sub_local = np.empty(0, dtype=int)
    if spec.driver_subpopulation > 0:
        sub_cols = rng.choice(np.setdiff1d(free, picked), size=spec.subpopulation_markers, replace=False)
        sub_local = pd.Index(part_cols).get_indexer(sub_cols)
    return GeneSpace(genes, model, programme, part_cols, lin_cols, niche_cols, sub_local)


def _mark_subpopulation(spec: EnvironmentSpec, space: GeneSpace, counts: np.ndarray, is_sub: np.ndarray,
                        library: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Partner counts (cells x the model's genes) with the sub-population's markers raised."""
    if is_sub.any() and len(space.sub_local):
        mean = spec.subpopulation_marker_level * library[is_sub, None]
        counts[np.ix_(is_sub, space.sub_local)] += rng.poisson(np.repeat(mean, len(space.sub_local), axis=1))
    return counts


def _spot_counts(spec: EnvironmentSpec, layout: Layout, space: GeneSpace,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spots x genes counts (partners by their densities, the lineage evenly, fates and pace by
    the driver's signal), the true abundance of every type and the cells per spot."""
    n_spots, n_part = len(layout.xy), len(spec.partners)
    driver_z = layout.driver_z
    weights = np.c_[layout.present * (1 - spec.lineage_share) / max(layout.present.mean(0).sum(), 1e-12),
                    np.full(n_spots, spec.lineage_share)]
    n_cells = rng.poisson(spec.cells_per_spot, size=n_spots)
    comp = np.stack([rng.multinomial(n, w / w.sum()) for n, w in zip(n_cells, weights)])
    counts = np.zeros((n_spots, len(space.genes)), dtype=np.int64)
    abundance = np.zeros((n_spots, n_part + len(LINEAGE)))
    abundance[:, :n_part] = comp[:, :n_part]
    cell_type_idx = np.repeat(np.tile(np.arange(n_part), n_spots), comp[:, :n_part].ravel())
    spot_of_cell = np.repeat(np.arange(n_spots), comp[:, :n_part].sum(1))
    library = rng.lognormal(np.log(2500.0), 0.4, size=len(cell_type_idx))
    part_counts = space.model.sample(cell_type_idx, library, rng)
    sub_cells = np.zeros(n_spots, dtype=int)
    if layout.sub_share is not None:
        is_sub = (cell_type_idx == spec.partners.index(spec.driver)) & (rng.random(len(cell_type_idx))
                                                                        < layout.sub_share[spot_of_cell])
        part_counts = _mark_subpopulation(spec, space, part_counts, is_sub, library, rng)
        sub_cells = np.bincount(spot_of_cell[is_sub], minlength=n_spots)
    np.add.at(counts, (spot_of_cell[:, None], space.part_cols[None, :]), part_counts)
    spot_of_lineage = np.repeat(np.arange(n_spots), comp[:, -1])
    insensitive = insensitive_cells(spec, len(spot_of_lineage), rng)
    p_alpha = np.where(insensitive, 0.5, layout.p_alpha[spot_of_lineage])
    fates = np.where(rng.random(len(spot_of_lineage)) < p_alpha, "alpha", "beta")
    speed = np.where(insensitive, 1.0, pace(spec, driver_z[spot_of_lineage]))
    cells = lineage_cells(space.programme, fates, speed, rng, insensitive, spec.n_receptor_genes)
    np.add.at(counts, (spot_of_lineage[:, None], space.lin_cols[None, :]), cells["spliced"] + cells["unspliced"])
    np.add.at(counts, spot_of_lineage, niche_counts(spec, layout.log_z[spot_of_lineage], space.niche_cols,
                                                    len(space.genes), rng))
    np.add.at(abundance, (spot_of_lineage, n_part + pd.Index(LINEAGE).get_indexer(cells["branch"])), 1)
    return rng.binomial(counts, spec.capture_efficiency).astype(np.int32), abundance, n_cells, sub_cells


def _spot_data(spec: EnvironmentSpec, layout: Layout, space: GeneSpace, rng: np.random.Generator) -> ad.AnnData:
    """The spots as an AnnData with the simulated truth (see the module docstring)."""
    counts, abundance, n_cells, sub_cells = _spot_counts(spec, layout, space, rng)
    partners = list(spec.partners)
    types = partners + LINEAGE
    truth = true_pair_colocalization(abundance)
    pairs = sorted({tuple(sorted((types[a], types[b]))) for a in range(len(types)) for b in range(len(types))
                    if a != b and truth[a, b] > 1.0})
    obs = pd.DataFrame({"n_cells_true": n_cells, "driver_density": layout.present[:, partners.index(spec.driver)],
                        "true_p_alpha": layout.p_alpha},
                       index=pd.Index([f"spot_{i:04d}" for i in range(len(layout.xy))], name="spot_id"))
    spots = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=space.genes.copy())
    if layout.sub_density is not None:
        spots.obs["true_subpopulation_cells"] = sub_cells
        spots.obs["subpopulation_density"] = layout.sub_density
    spots.obsm["spatial"] = layout.xy
    spots.obsm["true_abundance"] = abundance.astype(np.float32)
    spots.obsm["true_partner_density"] = pd.DataFrame(layout.present, index=spots.obs_names, columns=partners)
    spots.uns["cell_types"] = np.asarray(types)
    spots.uns["true_pair_colocalization"] = truth
    spots.uns["colocalized_pairs"] = np.asarray(pairs) if pairs else np.empty((0, 2), dtype=str)
    return spots


def _lineage_reference(spec: EnvironmentSpec, layout: Layout, space: GeneSpace,
                       rng: np.random.Generator) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Reference lineage cells, each with a fate and then a home drawn given it:
    (counts dict, fate, home spot, niche counts)."""
    n_spots, n = len(layout.xy), spec.n_reference_lineage_cells
    fate = rng.choice(["alpha", "beta"], size=n)
    insensitive = insensitive_cells(spec, n, rng)
    home = np.empty(n, dtype=int)
    for f, w in (("alpha", layout.p_alpha), ("beta", 1 - layout.p_alpha)):
        sel = np.flatnonzero((fate == f) & ~insensitive)
        home[sel] = rng.choice(n_spots, size=len(sel), p=w / w.sum())
    home[insensitive] = rng.choice(n_spots, size=int(insensitive.sum())) if insensitive.any() else home[insensitive]
    speed = np.where(insensitive, 1.0, pace(spec, layout.driver_z[home]))
    lin = lineage_cells(space.programme, fate, speed, rng, insensitive, spec.n_receptor_genes)
    lin["speed"], lin["insensitive"] = speed, insensitive
    niche = niche_counts(spec, layout.log_z[home], space.niche_cols, len(space.genes), rng)
    return lin, fate, home, niche


def _reference(spec: EnvironmentSpec, layout: Layout, space: GeneSpace, spots: ad.AnnData,
               rng: np.random.Generator) -> ad.AnnData:
    """Partner cells, then lineage cells with their homes, layers and true partner densities."""
    partners = list(spec.partners)
    abundance = spots.obsm["true_abundance"][:, :len(partners)]
    ref_types = rng.choice(len(partners), size=spec.n_reference_partner_cells, p=abundance.sum(0) / abundance.sum())
    ref_library = rng.lognormal(np.log(3000.0), 0.45, size=len(ref_types))
    ref_part = space.model.sample(ref_types, ref_library, rng)
    is_sub = None
    if "true_subpopulation_cells" in spots.obs:
        driver_cells = abundance[:, partners.index(spec.driver)].sum()
        share = spots.obs["true_subpopulation_cells"].sum() / max(driver_cells, 1.0)
        is_sub = (ref_types == partners.index(spec.driver)) & (rng.random(len(ref_types)) < share)
        ref_part = _mark_subpopulation(spec, space, ref_part, is_sub, ref_library, rng)
    lin, fate, home, niche = _lineage_reference(spec, layout, space, rng)
    n_part, n_ref = len(ref_types), len(ref_types) + len(fate)
    layers = {key: np.zeros((n_ref, len(space.genes)), dtype=np.float32 if key == "true_velocity" else np.int32)
              for key in ("spliced", "unspliced", "true_velocity", "niche")}
    layers["spliced"][n_part:, space.lin_cols] = lin["spliced"]
    layers["unspliced"][n_part:, space.lin_cols] = lin["unspliced"]
    layers["true_velocity"][n_part:, space.lin_cols] = lin["velocity"]
    layers["niche"][n_part:] = niche
    x = sp.lil_matrix((n_ref, len(space.genes)), dtype=np.int32)
    x[:n_part, space.part_cols] = ref_part
    x = sp.csr_matrix(x) + sp.csr_matrix(layers["spliced"] + layers["unspliced"] + layers.pop("niche"))
    blank = np.full(n_part, np.nan)
    obs = pd.DataFrame({
        "cell_type": pd.Categorical([partners[t] for t in ref_types] + list(lin["branch"]), categories=partners + LINEAGE),
        "is_lineage": np.r_[np.zeros(n_part, bool), np.ones(len(fate), bool)],
        "fate": np.r_[np.full(n_part, ""), fate], "pseudotime": np.r_[blank, lin["pseudotime"]],
        "speed": np.r_[blank, lin["speed"]], "home_spot": np.r_[np.full(n_part, ""), spots.obs_names[home]],
        "true_p_alpha": np.r_[blank, np.where(lin["insensitive"], 0.5, layout.p_alpha[home])],
        "niche_chooser": np.r_[np.zeros(n_part, bool), ~lin["insensitive"]],
    }, index=pd.Index([f"envcell_{i:05d}" for i in range(n_ref)], name="cell_id"))
    if is_sub is not None:
        obs["driver_subpopulation"] = np.r_[is_sub, np.zeros(len(fate), bool)]
    reference = ad.AnnData(X=x, obs=obs, var=space.genes.copy())
    for key, value in layers.items():
        reference.layers[key] = sp.csr_matrix(value)
    home_density = np.full((n_ref, len(partners)), np.nan)
    home_density[n_part:] = layout.present[home]
    reference.obsm["true_partner_density"] = pd.DataFrame(home_density, index=reference.obs_names, columns=partners)
    return reference


def simulate_environment(spec: EnvironmentSpec = EnvironmentSpec(), intervention: Intervention | None = None
                         ) -> tuple[ad.AnnData, ad.AnnData, pd.DataFrame]:
    """Return ``(spots, reference, ligand_target)``; see the module docstring for the keys.

    With an ``intervention`` the same tissue (same seed, same partner layout) is simulated with the
    partner removed, strengthened or its ligand blocked before any cell chooses its fate; the
    true fate proportions it leads to are in ``uns['environment_truth']['fate_share']``.
    """
    rng = sample_rng(spec.seed, "environment")
    layout = tissue_layout(spec, rng, intervention)
    space = _gene_space(spec, rng)
    spots = _spot_data(spec, layout, space, rng)
    reference = _reference(spec, layout, space, spots, rng)
    table = ligand_target(spec, space.programme.genes, rng)
    share = true_fate_share(spec, intervention)["alpha"]
    truth_info = {"driver": spec.driver, "partners": np.asarray(spec.partners), "fate_gain": spec.fate_gain,
                  "speed_gain": spec.speed_gain,
                  "niche_genes": {p: space.genes.index[c].to_numpy() for p, c in zip(spec.partners, space.niche_cols)},
                  "driver_ligand": CELL_TYPES[spec.driver]["markers"][0],
                  "fate_share": {"alpha": share, "beta": 1.0 - share},
                  "intervention": "none" if intervention is None else repr(intervention)}
    if spec.driver_subpopulation > 0:
        truth_info["driver_subpopulation"] = spec.driver_subpopulation
        truth_info["subpopulation_genes"] = space.genes.index[space.part_cols[space.sub_local]].to_numpy()
    spots.uns["environment_truth"] = truth_info
    reference.uns["environment_truth"] = truth_info
    return spots, reference, table


def spec_from_config(sim: dict) -> EnvironmentSpec:
    """The :class:`EnvironmentSpec` of the config's ``simulate`` block (its ``seed`` and optional
    ``environment`` mapping of spec fields)."""
    cfg = dict(sim.get("environment") or {})
    for key in ("grid", "partners"):
        if key in cfg:
            cfg[key] = tuple(cfg[key])
    return EnvironmentSpec(seed=sim["seed"], **cfg)


def write_environment(sim: dict, spots: str, reference: str, ligand_target_tsv: str) -> None:
    """Rule ``simulate_environment``: the tissue, its reference and its ligand-target matrix.

    ``sim`` is the config's ``simulate`` block: its ``seed`` and an optional ``environment``
    mapping of :class:`EnvironmentSpec` fields.
    """
    from cellfate.io import write_h5ad, write_table

    spot_data, ref, table = simulate_environment(spec_from_config(sim))
    write_h5ad(spot_data, spots)
    write_h5ad(ref, reference)
    write_table(table, ligand_target_tsv, index=True)
