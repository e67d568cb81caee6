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


def lineage_cells(programme: Programme, fate: np.ndarray, speed: np.ndarray, rng: np.random.Generator) -> dict:
    """Counts of lineage cells with these fates and paces: pseudotimes drawn as the bifurcation
    simulator draws them, a library factor each; integer ``spliced``/``unspliced``, the expected
    ``velocity`` (ds/dt), ``pseudotime`` and ``branch`` (progenitor before the branch point)."""
    n = len(fate)
    pseudotime = rng.permutation(sample_pseudotime(programme.spec, n, rng))
    library = rng.lognormal(0.0, 0.25, n)[:, None]
    mean_u, mean_s, velocity = expected_counts(programme, fate, pseudotime, speed)
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


def simulate_environment(spec: EnvironmentSpec = EnvironmentSpec()) -> tuple[ad.AnnData, ad.AnnData, pd.DataFrame]:
    """Return ``(spots, reference, ligand_target)``; see the module docstring for the keys."""
    if spec.driver not in spec.partners:
        raise ValueError(f"driver {spec.driver!r} is not among the partners {spec.partners}")
    rng = sample_rng(spec.seed, "environment")
    nx, ny = spec.grid
    xy = np.array([(x, y) for y in range(ny) for x in range(nx)], dtype=float)
    n_spots = len(xy)
    density = _densities(spec, xy, rng)
    driver_z = _standardise(np.log(density[:, spec.partners.index(spec.driver)]))
    p_alpha = _sigmoid(spec.fate_gain * driver_z)

    partners = list(spec.partners)
    model = corpus_model(partners, spec.n_genes, spec.seed)
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
    log_z = np.stack([_standardise(np.log(density[:, k])) for k in range(len(spec.partners))], axis=1)

    # spots: partners by their densities, the lineage evenly, fates and pace by the driver
    weights = np.c_[density * (1 - spec.lineage_share) / density.mean(0).sum(), np.full(n_spots, spec.lineage_share)]
    n_cells = rng.poisson(spec.cells_per_spot, size=n_spots)
    comp = np.stack([rng.multinomial(n, w / w.sum()) for n, w in zip(n_cells, weights)])
    counts = np.zeros((n_spots, len(genes)), dtype=np.int64)
    abundance = np.zeros((n_spots, len(partners) + len(LINEAGE)))
    abundance[:, : len(partners)] = comp[:, : len(partners)]
    cell_type_idx = np.repeat(np.tile(np.arange(len(partners)), n_spots), comp[:, : len(partners)].ravel())
    spot_of_cell = np.repeat(np.arange(n_spots), comp[:, : len(partners)].sum(1))
    library = rng.lognormal(np.log(2500.0), 0.4, size=len(cell_type_idx))
    np.add.at(counts, (spot_of_cell[:, None], part_cols[None, :]), model.sample(cell_type_idx, library, rng))
    spot_of_lineage = np.repeat(np.arange(n_spots), comp[:, -1])
    fates = np.where(rng.random(len(spot_of_lineage)) < p_alpha[spot_of_lineage], "alpha", "beta")
    in_spots = lineage_cells(programme, fates, pace(spec, driver_z[spot_of_lineage]), rng)
    np.add.at(counts, (spot_of_lineage[:, None], lin_cols[None, :]), in_spots["spliced"] + in_spots["unspliced"])
    np.add.at(counts, spot_of_lineage, niche_counts(spec, log_z[spot_of_lineage], niche_cols, len(genes), rng))
    np.add.at(abundance, (spot_of_lineage, len(partners) + pd.Index(LINEAGE).get_indexer(in_spots["branch"])), 1)
    counts = rng.binomial(counts, spec.capture_efficiency).astype(np.int32)

    types = partners + LINEAGE
    truth = true_pair_colocalization(abundance)
    pairs = sorted({tuple(sorted((types[a], types[b]))) for a in range(len(types)) for b in range(len(types))
                    if a != b and truth[a, b] > 1.0})
    spots = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame({"n_cells_true": n_cells, "driver_density": density[:, partners.index(spec.driver)]},
                         index=pd.Index([f"spot_{i:04d}" for i in range(n_spots)], name="spot_id")),
        var=genes.copy(),
    )
    spots.obsm["spatial"] = xy
    spots.obsm["true_abundance"] = abundance.astype(np.float32)
    spots.obsm["true_partner_density"] = pd.DataFrame(density, index=spots.obs_names, columns=partners)
    spots.uns["cell_types"] = np.asarray(types)
    spots.uns["true_pair_colocalization"] = truth
    spots.uns["colocalized_pairs"] = np.asarray(pairs) if pairs else np.empty((0, 2), dtype=str)

    # reference: partner cells, then lineage cells each with a home spot chosen given its fate
    share = abundance[:, : len(partners)].sum(0) / abundance[:, : len(partners)].sum()
    ref_types = rng.choice(len(partners), size=spec.n_reference_partner_cells, p=share)
    ref_part = model.sample(ref_types, rng.lognormal(np.log(3000.0), 0.45, size=len(ref_types)), rng)
    n_lineage_total = spec.n_reference_lineage_cells
    fate = rng.choice(["alpha", "beta"], size=n_lineage_total)
    home = np.empty(n_lineage_total, dtype=int)
    for f, w in (("alpha", p_alpha), ("beta", 1 - p_alpha)):
        sel = np.flatnonzero(fate == f)
        home[sel] = rng.choice(n_spots, size=len(sel), p=w / w.sum())
    speed = pace(spec, driver_z[home])
    lin = lineage_cells(programme, fate, speed, rng)
    n_ref = len(ref_types) + n_lineage_total
    x = sp.lil_matrix((n_ref, len(genes)), dtype=np.int32)
    x[: len(ref_types), part_cols] = ref_part
    spliced = np.zeros((n_ref, len(genes)), dtype=np.int32)
    unspliced = np.zeros((n_ref, len(genes)), dtype=np.int32)
    spliced[len(ref_types):, lin_cols] = lin["spliced"]
    unspliced[len(ref_types):, lin_cols] = lin["unspliced"]
    velocity = np.zeros((n_ref, len(genes)), dtype=np.float32)
    velocity[len(ref_types):, lin_cols] = lin["velocity"]
    niche = np.zeros((n_ref, len(genes)), dtype=np.int32)
    niche[len(ref_types):] = niche_counts(spec, log_z[home], niche_cols, len(genes), rng)
    x = sp.csr_matrix(x) + sp.csr_matrix(spliced + unspliced + niche)
    cell_type = [partners[t] for t in ref_types] + list(lin["branch"])
    obs = pd.DataFrame({
        "cell_type": pd.Categorical(cell_type, categories=types),
        "is_lineage": np.r_[np.zeros(len(ref_types), bool), np.ones(n_lineage_total, bool)],
        "fate": np.r_[np.full(len(ref_types), ""), fate],
        "pseudotime": np.r_[np.full(len(ref_types), np.nan), lin["pseudotime"]],
        "speed": np.r_[np.full(len(ref_types), np.nan), speed],
        "home_spot": np.r_[np.full(len(ref_types), ""), spots.obs_names[home]],
    }, index=pd.Index([f"envcell_{i:05d}" for i in range(n_ref)], name="cell_id"))
    reference = ad.AnnData(X=x, obs=obs, var=genes.copy())
    reference.layers["spliced"] = sp.csr_matrix(spliced)
    reference.layers["unspliced"] = sp.csr_matrix(unspliced)
    reference.layers["true_velocity"] = sp.csr_matrix(velocity)
    home_density = np.full((n_ref, len(partners)), np.nan)
    home_density[len(ref_types):] = density[home]
    reference.obsm["true_partner_density"] = pd.DataFrame(home_density, index=reference.obs_names, columns=partners)
    table = ligand_target(spec, lineage_genes, rng)
    truth_info = {"driver": spec.driver, "partners": np.asarray(partners), "fate_gain": spec.fate_gain,
                  "speed_gain": spec.speed_gain,
                  "niche_genes": {p: genes.index[c].to_numpy() for p, c in zip(partners, niche_cols)},
                  "driver_ligand": CELL_TYPES[spec.driver]["markers"][0]}
    spots.uns["environment_truth"] = truth_info
    reference.uns["environment_truth"] = truth_info
    return spots, reference, table


def write_environment(sim: dict, spots: str, reference: str, ligand_target_tsv: str) -> None:
    """Rule ``simulate_environment``: the tissue, its reference and its ligand-target matrix.

    ``sim`` is the config's ``simulate`` block: its ``seed`` and an optional ``environment``
    mapping of :class:`EnvironmentSpec` fields.
    """
    from cellfate.io import write_h5ad, write_table

    cfg = dict(sim.get("environment") or {})
    for key in ("grid", "partners"):
        if key in cfg:
            cfg[key] = tuple(cfg[key])
    spot_data, ref, table = simulate_environment(EnvironmentSpec(seed=sim["seed"], **cfg))
    write_h5ad(spot_data, spots)
    write_h5ad(ref, reference)
    write_table(table, ligand_target_tsv, index=True)
