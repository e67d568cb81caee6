"""One function per workflow rule of the spatial stage: files in, files out, the ``spatial`` config.

Outputs of ``deepcolor``: the saved model folder; ``deepcolor.h5ad`` (the reference cells with
``obsm['X_zl']``, ``obs['map_total']`` = row sum of map2sp, ``obs['map_entropy']``);
``p_mat.npy`` (cells x spots float32, rows sum to 1); ``spots_mapped.h5ad`` (the spots over the
model's genes with ``obsm['deepcolor_type_share']``, ``obsm['deepcolor_type_distribution']`` and
``layers['deepcolor_imputed']``). p_mat is a separate ``.npy`` and not ``obsm``: it is dense cells
x spots (1.6 GB at 100k cells x 4k spots), and an .npy can be memory-mapped so later steps read it
in blocks. ``map2sp`` = p_mat * map_total[:, None] is recovered exactly from the two.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sparse
import torch

from cellfate.counts import dense
from cellfate.errors import CellfateError
from cellfate.io import atomic_path, write_h5ad, write_table
from cellfate.readers import read_h5ad
from cellfate.spatial import colocalization as coloc
from cellfate.spatial import environment as env
from cellfate.spatial import ligands as lig
from cellfate.spatial import placement
from cellfate.spatial import validation
from cellfate.spatial.cell_level import cell_level_metrics
from cellfate.spatial.map_outputs import write_p_mat
from cellfate.spatial.model import DeepColor, DeepColorConfig, type_shares_from_p
from cellfate.spatial.pair_clusters import pair_clusters as cluster_pairs

log = logging.getLogger(__name__)
Config = Mapping[str, Any]
PathLike = str | os.PathLike[str]

DEFAULTS: dict[str, Any] = {
    "cell_type_key": "cell_type",
    "seed": 42,
    "device": "cpu",
    "deepcolor": {},
    "colocalization": {"threshold": 1.0, "max_cells": 5000, "drop_fraction": 0.05},
    "pair_clusters": {"max_pairs": 20000, "n_neighbors": 15, "resolution": 0.1},
    "ligands": {"n_top_targets": 20},
    "environment": {"cells": ["progenitor", "alpha", "beta"], "partners": None, "condition": "colocalization",
                    "placement": "map", "placement_temperature": 0.1, "placement_smoothing": 1.5,
                    "clusters_per_type": 3, "cluster_space": "expression", "n_neighbors": 15, "folds": 5, "n_permutations": 200, "stratum_cells": 10, "alpha": 0.05,
                    "min_counts": 10, "n_top_genes": None, "n_modes": 3, "n_latent": 10, "n_hidden": 50, "epochs_vae": 100,
                    "epochs_dynamics": 100, "batch_size": 100, "lr": 1e-3, "patience": 0},
}


def settings(cfg: Config | None) -> dict[str, Any]:
    """The ``spatial`` block over the defaults (sub-blocks merged key by key)."""
    cfg = dict(cfg or {})
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for key, value in cfg.items():
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            unknown = set(value) - set(out[key]) if out[key] else set()
            if unknown:
                raise CellfateError(f"unknown spatial.{key} setting(s): {sorted(unknown)}")
            out[key].update(value)
        else:
            out[key] = value
    return out


def cell_type_labels(adata: ad.AnnData, key: str, path: PathLike) -> pd.Series:
    """The cells' type labels as strings; a missing column is a one-line error naming ``path``."""
    if key not in adata.obs:
        raise CellfateError(f"no obs column {key!r} with the cell types (spatial.cell_type_key)", path)
    return adata.obs[key].astype(str)


def deepcolor(reference: PathLike, spots: PathLike, model_dir: PathLike, cells_h5ad: PathLike, p_mat: PathLike,
              mapped_spots: PathLike, cfg: Config | None = None) -> DeepColor:
    """Rule ``deepcolor``: fit, save the model, write the cells, p_mat and the mapped spots."""
    cfg = settings(cfg)
    cells = read_h5ad(reference, what="reference h5ad")
    spot_data = read_h5ad(spots, what="spots h5ad", obsm=("spatial",))
    labels = cell_type_labels(cells, cfg["cell_type_key"], reference)
    config = DeepColorConfig.from_dict({"seed": cfg["seed"], "type_key": cfg["cell_type_key"], **cfg["deepcolor"]})
    model = DeepColor.fit(cells, spot_data, config, cells_path=reference, spots_path=spots, device=cfg["device"])
    model.save(model_dir)
    zl = model.latent(cells)
    # p_mat is written a block of cells at a time; no cells x spots array is held (map_outputs)
    features = model.map_inputs(*_mapping_view(cells, model, zl))
    summary = write_p_mat(model, features, zl, labels, p_mat)
    mapped = spot_data[:, model.genes].copy()
    mapped.obsm["deepcolor_type_share"] = summary.type_share.set_index(mapped.obs_names)
    mapped.layers["deepcolor_imputed"] = summary.imputed
    mapped.obsm["deepcolor_type_distribution"] = summary.type_distribution.set_index(mapped.obs_names)

    cells.obsm["X_zl"] = zl
    cells.obs["map_total"] = summary.map_total
    cells.obs["map_entropy"] = summary.entropy
    cells.var["deepcolor_used"] = cells.var_names.isin(model.genes)
    cells.uns["deepcolor"] = {"n_genes": len(model.genes), "n_spots": len(model.spot_names),
                              "cell_type_key": cfg["cell_type_key"], "p_mat": os.path.basename(str(p_mat))}
    write_h5ad(cells, cells_h5ad)
    write_h5ad(mapped, mapped_spots)
    return model


def _mapping_view(cells: ad.AnnData, model: DeepColor, zl: np.ndarray) -> tuple[ad.AnnData, np.ndarray]:
    """The cells as the map reads them: without their unspliced counts when they have them.

    The environment analysis asks whether a cell's colocalization explains its unspliced counts
    beyond its state; a map computed from those very counts shares their noise, and on the
    simulated negative control (partners without effect) that shared noise named a partner
    (p 0.005). Mapping from the rest of the counts removes it.
    """
    if "unspliced" not in cells.layers:
        return cells, zl
    x = sparse.csr_matrix(cells.layers["counts"] if "counts" in cells.layers else cells.X)
    unspliced = sparse.csr_matrix(cells.layers["unspliced"])
    if "spliced" in cells.layers and x.sum() <= sparse.csr_matrix(cells.layers["spliced"]).sum():
        return cells, zl  # the counts are the spliced ones already (velocyto's X)
    rest = (x - unspliced).maximum(0)
    keep = [model.config.type_key] if model.config.type_key in cells.obs else []  # within-type components read it
    view = ad.AnnData(X=rest, var=cells.var[[]].copy(), obs=cells.obs[keep].copy())
    return view, model.latent(view)


def colocalization(cells_h5ad: PathLike, p_mat: PathLike, types_tsv: PathLike, edges_out: PathLike,
                   cfg: Config | None = None) -> None:
    """Rule ``colocalization``: the type-level matrix and the cell-pair edges (parquet)."""
    cfg = settings(cfg)
    c = cfg["colocalization"]
    cells = ad.read_h5ad(cells_h5ad)
    p = np.load(p_mat, mmap_mode="r")
    if p.shape[0] != cells.n_obs:
        raise CellfateError(f"p_mat has {p.shape[0]} rows but {cells_h5ad} has {cells.n_obs} cells", p_mat)
    labels = cell_type_labels(cells, cfg["cell_type_key"], cells_h5ad).to_numpy()
    matrix = coloc.type_colocalization(p, labels, cells.obs["map_total"].to_numpy(), c["drop_fraction"])
    write_table(matrix, types_tsv, index=True)
    edges = coloc.colocalization_edges(p, cells.obs_names, labels, c["threshold"], c["max_cells"], cfg["seed"])
    with atomic_path(edges_out) as tmp:
        edges.to_parquet(tmp, index=False)


def pair_clusters(cells_h5ad: PathLike, edges: PathLike, out_tsv: PathLike, cfg: Config | None = None) -> None:
    """Rule ``pair_clusters``: z_i + z_j of sampled edges -> neighbours, UMAP, Leiden."""
    cfg = settings(cfg)
    c = cfg["pair_clusters"]
    cells = ad.read_h5ad(cells_h5ad)
    latent = pd.DataFrame(cells.obsm["X_zl"], index=cells.obs_names)
    table = cluster_pairs(pd.read_parquet(edges), latent, c["max_pairs"], c["n_neighbors"], c["resolution"], cfg["seed"])
    write_table(table, out_tsv)


def cell_expression(cells: ad.AnnData, model_dir: PathLike) -> pd.DataFrame:
    """Cells x genes decoded expression, columns named by gene symbol where known."""
    model = DeepColor.load(model_dir)
    expr = model.expression(cells.obsm["X_zl"])
    names = cells.var.loc[model.genes, "symbol"].astype(str) if "symbol" in cells.var else pd.Series(model.genes, index=model.genes)
    frame = pd.DataFrame(expr, index=cells.obs_names, columns=names.to_numpy())
    return frame.loc[:, ~frame.columns.duplicated()]


def ligands(cells_h5ad: PathLike, model_dir: PathLike, edges: PathLike, ligand_target: PathLike, out_tsv: PathLike,
            cfg: Config | None = None) -> None:
    """Rule ``ligand_activity``: (sender, receiver, ligand) co-activity over the edges."""
    cfg = settings(cfg)
    cells = ad.read_h5ad(cells_h5ad)
    table = lig.read_ligand_target(ligand_target)
    expression = cell_expression(cells, model_dir)
    result = lig.ligand_activity(expression, cell_type_labels(cells, cfg["cell_type_key"], cells_h5ad), pd.read_parquet(edges),
                                 table, cfg["ligands"]["n_top_targets"])
    write_table(result, out_tsv)


def validate(cells_h5ad: PathLike, p_mat: PathLike, types_tsv: PathLike, spots: PathLike, out_tsv: PathLike,
             cfg: Config | None = None, environment_modes: PathLike | None = None,
             negative_modes: PathLike | None = None, forward_table: PathLike | None = None) -> pd.DataFrame:
    """Rule ``spatial_validation``: map correlation, colocalization AUROC/Spearman, cell-level map
    metrics (on a tissue with cell homes), and the environment analysis' named partners on the
    positive and the negative control, against the simulated truth."""
    cfg = settings(cfg)
    cells = ad.read_h5ad(cells_h5ad)
    spot_data = read_h5ad(spots, what="spots h5ad")
    if "true_abundance" not in spot_data.obsm:
        raise CellfateError("no obsm['true_abundance']: validation needs the simulated tissue", spots)
    labels = cell_type_labels(cells, cfg["cell_type_key"], cells_h5ad)
    p = np.load(p_mat, mmap_mode="r")
    shares = type_shares_from_p(p, cells.obs["map_total"].to_numpy(), labels)
    matrix = pd.read_csv(types_tsv, sep="\t", index_col=0)
    extra = {}
    if "true_x" in cells.obs:  # the cell-level tissue: does each cell's map follow its home?
        truth = dict(spot_data.uns).get("cell_level_truth", {})
        extra.update(cell_level_metrics(p, spot_data.obsm["spatial"], cells.obs, str(truth.get("gradient_type")),
                                        str(truth.get("substate_type")), cfg["cell_type_key"]))
    if environment_modes is not None:
        extra.update(environment_rows(_read_modes(environment_modes), negative=False))
    if negative_modes is not None:
        extra.update(environment_rows(_read_modes(negative_modes), negative=True))
    if forward_table is not None:  # the forward analysis against the simulator re-run (issue 16)
        extra.update(validation.forward_rows(pd.read_csv(forward_table, sep="\t")))
    table = validation.validation_table(shares, matrix, spot_data.obsm["true_abundance"], dict(spot_data.uns), extra)
    write_table(table, out_tsv)
    return table


def _read_modes(path: PathLike) -> pd.DataFrame:
    modes = pd.read_csv(path, sep="\t")
    if "is_true_driver" not in modes or "named" not in modes:
        raise CellfateError("the environment modes carry no simulated driver or test to validate against", path)
    return modes


def environment_rows(modes: pd.DataFrame, negative: bool) -> dict[str, float]:
    """Validation rows of one control, per condition (the first is the analysed one, then the
    true-density control): positive, 1 when the partners named in mode 1 are exactly the driver;
    negative, 1 when nothing is named in any mode. Also the driver column's state R^2."""
    out = {}
    for k, condition in enumerate(dict.fromkeys(modes["condition"])):
        rows = modes[modes["condition"] == condition]
        suffix = "" if k == 0 else f"_{condition}_c"
        if negative:
            out[f"environment_negative_nothing_named{suffix}"] = float(not rows["named"].any())
        else:
            named = set(rows.loc[(rows["mode"] == 1) & rows["named"], "partner_type"])
            driver = set(rows.loc[rows["is_true_driver"], "partner_type"])
            out[f"environment_partner_named{suffix}"] = float(bool(named) and named == driver)
        if k == 0 and "state_r2" in rows:
            out[f"environment_{'negative_' if negative else ''}state_r2_driver"] = float(
                rows.loc[rows["is_true_driver"], "state_r2"].max())
    return out


def condition_matrix(cells: ad.AnnData, lineage: np.ndarray, labels: np.ndarray, partners: list[str], e: dict[str, Any],
                     p_mat: PathLike, path: PathLike, seed: int = 0,
                     lineage_map: np.ndarray | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """The condition matrix c of the modelled cells, its column names and each column's partner type.

    ``e['condition']``: ``colocalization`` (with each partner type, from DeepCOLOR), ``clusters``
    (with each sub-population of each partner type), ``neighbourhood`` (observed composition of the
    nearest cells, for cells with ``obsm['spatial']``), ``truth`` (the simulated partner densities)
    or an obs column (one-hot experimental condition). ``lineage_map`` (modelled cells x spots)
    replaces the modelled cells' rows of p_mat (the state-blind placement); partners keep theirs.
    """
    how = e["condition"]
    if how in ("colocalization", "clusters"):
        p = np.load(p_mat, mmap_mode="r")
        rows, part = np.flatnonzero(lineage), np.flatnonzero(np.isin(labels, partners))
        p_rows = p[rows] if lineage_map is None else lineage_map
        if how == "colocalization":
            return env.colocalization_condition(p_rows, p[part], labels[part], partners), partners, partners
        space = cluster_space(cells, part, labels, e, path)
        return env.cluster_colocalization_condition(p_rows, p[part], labels[part], space, partners,
                                                    int(e["clusters_per_type"]), seed)
    if how == "neighbourhood":
        if "spatial" not in cells.obsm:
            raise CellfateError("condition 'neighbourhood' needs obsm['spatial'] (cell coordinates)", path)
        xy = np.asarray(cells.obsm["spatial"], dtype=float)
        c = env.neighbourhood_condition(xy[lineage], xy, labels, partners, int(e["n_neighbors"]))
        return c, partners, partners
    if how == "truth":
        if "true_partner_density" not in cells.obsm:
            raise CellfateError("condition 'truth' needs obsm['true_partner_density'] (the simulated tissue)", path)
        dens = pd.DataFrame(cells.obsm["true_partner_density"], index=cells.obs_names)[partners]
        return np.log(dens.to_numpy()[lineage]), partners, partners
    if how not in cells.obs:
        raise CellfateError(f"spatial.environment.condition {how!r} is neither colocalization, clusters, "
                            "neighbourhood, truth nor an obs column", path)
    onehot = pd.get_dummies(cells.obs[how].astype(str)[lineage])
    return onehot.to_numpy(dtype=float), list(onehot.columns), list(onehot.columns)


def cluster_space(cells: ad.AnnData, part: np.ndarray, labels: np.ndarray, e: dict[str, Any],
                  path: PathLike) -> np.ndarray:
    """Where the partner cells (rows ``part``) are clustered for condition ``clusters``:
    ``e['cluster_space']`` ``latent`` (DeepCOLOR's X_zl) or ``expression`` (10 principal components
    of log expression within each partner type, over the genes DeepCOLOR used)."""
    how = e.get("cluster_space", "expression")
    if how == "latent":
        return cells.obsm["X_zl"][part]
    if how != "expression":
        raise CellfateError(f"spatial.environment.cluster_space must be latent or expression, not {how!r}", path)
    x = sparse.csr_matrix(cells.layers["counts"] if "counts" in cells.layers else cells.X)[part]
    if "deepcolor_used" in cells.var:
        x = x[:, np.flatnonzero(cells.var["deepcolor_used"].to_numpy(dtype=bool))]
    return env.within_type_components(x, labels[part], 10)


def _type_expression(cells: ad.AnnData, labels: np.ndarray, partner: str) -> pd.Series:
    """Per gene symbol: the partner type's mean normalised expression over the highest type mean."""
    norm = per10k(cells.X)
    types = pd.unique(labels)
    means = pd.DataFrame({t: np.asarray(norm[labels == t].mean(0)).ravel() for t in types}, index=cells.var_names)
    rel = means[partner] / means.max(1).replace(0, np.nan)
    if "symbol" in cells.var:
        rel.index = cells.var["symbol"].astype(str).to_numpy()
    return rel[~rel.index.duplicated()]


def per10k(x: Any) -> Any:
    """Counts per 10k per cell (sparse stays sparse)."""
    totals = np.asarray(x.sum(1)).ravel()
    scale = 1e4 / np.maximum(totals, 1.0)
    return sparse.diags(scale) @ x if sparse.issparse(x) else x * scale[:, None]


def _lineage(cells: ad.AnnData, e: dict[str, Any], cfg: Config, path: PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Cell type labels, the mask of the modelled cells and the partner types, checked."""
    labels = cell_type_labels(cells, cfg["cell_type_key"], path).to_numpy()
    lineage = np.isin(labels, e["cells"])
    if lineage.sum() < 20:
        raise CellfateError(f"only {lineage.sum()} cells of the types {e['cells']} (spatial.environment.cells)", path)
    if lineage.sum() < 2 * int(e["folds"]):
        raise CellfateError(f"{lineage.sum()} modelled cells for {e['folds']} folds (spatial.environment.folds)", path)
    for layer in ("spliced", "unspliced"):
        if layer not in cells.layers:
            raise CellfateError(f"no layers[{layer!r}]: environment dynamics needs spliced and unspliced counts", path)
    return labels, lineage, list(e["partners"] or [t for t in pd.unique(labels) if t not in e["cells"]])


def environment(cells_h5ad: PathLike, p_mat: PathLike, ligand_target: PathLike, modes_tsv: PathLike,
                genes_tsv: PathLike, ligands_tsv: PathLike, cfg: Config | None = None,
                spots_h5ad: PathLike | None = None) -> pd.DataFrame:
    """Rule ``environment_dynamics``: cross-fitted conditioned dynamics of the modelled cells,
    Jacobian modes, per-gene velocity change of mode 1 and the ligands that would cause it. On the
    simulated tissue the same analysis also runs with the true partner densities as c: that
    control tells a failure of the analysis from a condition that carries no environment.
    ``spots_h5ad`` is read only for ``placement: state_blind`` or ``niche``."""
    cfg = settings(cfg)
    e = cfg["environment"]
    cells = ad.read_h5ad(cells_h5ad)
    labels, lineage, partners = _lineage(cells, e, cfg, cells_h5ad)
    sub = cells[lineage]
    spliced, unspliced = (dense(sub.layers[k]) for k in ("spliced", "unspliced"))  # one lineage: few cells
    folds = env.crossfit_folds(int(lineage.sum()), int(e["folds"]), cfg["seed"])
    # VICDYF needs spliced counts in every gene of every fold's training cells
    keep = np.all([np.delete(spliced, f, 0).sum(0) >= max(1, e["min_counts"]) for f in folds], axis=0)
    if e["n_top_genes"]:
        keep = most_variable(spliced, keep, int(e["n_top_genes"]))
    placed = lineage_placement(cells, lineage, labels, partners, keep, e, spots_h5ad, cells_h5ad, p_mat)
    if e["placement"] == "niche" and placed is not None:
        c, names, column_types = placed, partners, partners
    else:
        c, names, column_types = condition_matrix(cells, lineage, labels, partners, e, p_mat, cells_h5ad, cfg["seed"],
                                                  placed)
    mcfg = env.EnvironmentConfig(**{k: e[k] for k in ("n_latent", "n_hidden", "epochs_vae", "epochs_dynamics",
                                                       "batch_size", "lr", "patience")}, seed=cfg["seed"])
    log.info("environment dynamics: %d cells in %d folds, %d genes, conditions %s", len(c), len(folds), keep.sum(), names)
    s, u = spliced[:, keep], unspliced[:, keep]
    modes, fits = _analyse(s, u, env.standardise(c), names, column_types, e["condition"], folds, mcfg, e, cfg["seed"])
    truth = cells.uns.get("environment_truth")
    tables = [modes]
    if truth is not None:
        modes["is_true_driver"] = modes["partner_type"] == str(truth["driver"])
        if e["condition"] != "truth" and "true_partner_density" in cells.obsm:
            c_true, _, _ = condition_matrix(cells, lineage, labels, partners, {**e, "condition": "truth"}, p_mat, cells_h5ad)
            control, _ = _analyse(s, u, env.standardise(c_true), partners, partners, "truth", folds, mcfg, e, cfg["seed"])
            tables.append(control.assign(is_true_driver=control["partner"] == str(truth["driver"])))
    write_table(pd.concat(tables, ignore_index=True), modes_tsv)
    _write_mode_one(cells, labels, sub.var_names[keep], modes, fits, ligand_target, genes_tsv, ligands_tsv, truth)
    return modes


def most_variable(spliced: np.ndarray, keep: np.ndarray, n_top: int) -> np.ndarray:
    """``keep`` narrowed to the ``n_top`` genes whose log expression (per 10k) varies most among
    the modelled cells: the genes that carry their state. On real data every gene has spliced
    counts, so without this choice the dynamics would read every gene and a state-blind placement
    would have none left to place a cell by."""
    log_expression = np.log1p(per10k(spliced))
    variance = np.where(keep, log_expression.var(axis=0), -np.inf)
    chosen = np.zeros_like(keep, dtype=bool)
    chosen[np.argsort(-variance, kind="stable")[:min(n_top, int(keep.sum()))]] = True
    return chosen


def lineage_placement(cells: ad.AnnData, lineage: np.ndarray, labels: np.ndarray, partners: list[str],
                      dynamics: np.ndarray, e: dict[str, Any], spots_h5ad: PathLike | None, path: PathLike,
                      p_mat: PathLike | None = None) -> np.ndarray | None:
    """How the modelled cells' condition is placed: None (their DeepCOLOR rows) for ``placement:
    map``; for ``state_blind``, cells x spots from the genes the dynamics model does not read; for
    ``niche``, cells x partners predicted from those genes (:mod:`cellfate.spatial.placement`), so
    that c says where a cell lives rather than its fate."""
    how = e["placement"]
    if how not in ("map", "state_blind", "niche"):
        raise CellfateError(f"spatial.environment.placement {how!r} is neither map, state_blind nor niche", path)
    if how == "map" or e["condition"] not in ("colocalization", "clusters"):
        return None
    if how == "niche" and e["condition"] != "colocalization":
        raise CellfateError("spatial.environment.placement niche gives one column per partner type: it needs "
                            "condition colocalization", path)
    if spots_h5ad is None:
        raise CellfateError(f"spatial.environment.placement {how} needs the spots h5ad", path)
    spots = read_h5ad(spots_h5ad, what="spots h5ad", obsm=("spatial",))
    genes = cells.var_names.intersection(spots.var_names)
    if len(genes) == 0:
        raise CellfateError("the spots share no gene with the reference cells", spots_h5ad)
    cols = cells.var_names.get_indexer(genes)
    counts = sparse.csr_matrix(cells.layers["counts"] if "counts" in cells.layers else cells.X)[:, cols]
    part = np.isin(labels, partners)
    # the placement needs each partner type's mean profile only: one row per type, never all partner cells dense
    profiles = np.vstack([np.asarray(counts[labels == name].mean(0)) for name in partners])
    args = (dense(counts[lineage]), profiles, np.asarray(partners), partners, dense(spots[:, genes].X),
            np.asarray(dynamics)[cols])
    if how == "niche":
        p = np.load(p_mat, mmap_mode="r")[np.flatnonzero(part)]
        density = np.stack([np.asarray(p[labels[part] == name]).sum(0) for name in partners], axis=1)
        return placement.niche_condition(*args, density)
    return placement.state_blind_map(*args, float(e["placement_temperature"]), np.asarray(spots.obsm["spatial"]),
                                     float(e["placement_smoothing"]))


def _write_mode_one(cells: ad.AnnData, labels: np.ndarray, gene_ids: pd.Index, modes: pd.DataFrame, fits: list,
                    ligand_target: PathLike, genes_tsv: PathLike, ligands_tsv: PathLike, truth: Any) -> None:
    """Mode 1's per-gene velocity change (mean over the fits) and the ligands that would cause it,
    weighted by the expression of mode 1's leading partner."""
    first = modes[modes["mode"] == 1]
    change = np.mean([env.velocity_change(f.module, f.z_train, f.jacobian, first["weight"].to_numpy()) for f in fits], axis=0)
    symbols = cells.var.loc[gene_ids, "symbol"].astype(str).to_numpy() if "symbol" in cells.var else np.asarray(gene_ids)
    genes = pd.DataFrame({"gene_id": gene_ids, "gene": symbols, "velocity_change": change, "abs_velocity_change": np.abs(change)})
    write_table(genes.sort_values("abs_velocity_change", ascending=False), genes_tsv)
    top_partner = first.sort_values("abs_weight", ascending=False)["partner_type"].iloc[0]
    partner_expr = _type_expression(cells, labels, top_partner) if top_partner in labels else None
    series = pd.Series(change, index=symbols)
    series = series[~series.index.duplicated()]
    scores = env.ligand_scores(series, lig.read_ligand_target(ligand_target), partner_expr).assign(partner=top_partner)
    if truth is not None:
        scores["is_true_ligand"] = scores["ligand"] == str(truth["driver_ligand"])
    write_table(scores, ligands_tsv)


@dataclasses.dataclass(frozen=True)
class _FoldFit:
    """The conditioned dynamics fitted without one fold's cells."""

    module: Any
    hold: np.ndarray
    z_train: torch.Tensor
    jacobian: np.ndarray  # at the training cells


def _analyse(s: np.ndarray, u: np.ndarray, c: np.ndarray, names: list[str], types: list[str], condition: str,
             folds: list[np.ndarray], mcfg: env.EnvironmentConfig, e: dict[str, Any],
             seed: int) -> tuple[pd.DataFrame, list[_FoldFit]]:
    """One fit per fold (each without the fold's cells), modes of their stacked Jacobians, how much
    of c the state explains, and the cross-fitted conditional permutation test per partner column
    and per mode. A partner is ``significant`` when mode 1 (the mode the analysis reads) passes
    ``alpha`` and its own column passes ``alpha`` / number of columns (Bonferroni: an uncorrected
    0.05 over three partners named a partner in the negative control; Holm's step-down, tried with
    cross-fitting, named one too). It is ``named`` when it also carries more than an equal share of mode 1
    (weight^2 > 1 / columns): a column tests whether a partner adds to the others, and a mapped
    colocalization is a noisy proxy of the density at the cell's home of which every partner's
    column holds a part, so with all cells held out every column can add something; the mode says
    through which partner the drift responds."""
    fits = [_fold_fit(s, u, c, hold, dataclasses.replace(mcfg, seed=mcfg.seed + k)) for k, hold in enumerate(folds)]
    modes = env.environment_modes(np.concatenate([f.jacobian for f in fits]), names, e["n_modes"])
    modes.insert(0, "condition", condition)
    modes["partner_type"] = modes["partner"].map(dict(zip(names, types)))
    r2 = env.state_explains_condition(env.latent_mean(fits[0].module, s).cpu().numpy(), c, seed=seed)
    modes["state_r2"] = modes["partner"].map(dict(zip(names, r2)))
    for name in np.asarray(names)[r2 > 0.9]:
        log.warning("condition %s (%s) is a function of the cells' own state (R^2 %.2f from z): its effect on "
                    "the dynamics cannot be told from the state's, and the test has no power to name it",
                    name, condition, r2[names.index(name)])
    directions = {name: [np.eye(len(names))[k]] * len(fits) for k, name in enumerate(names)}
    own = [env.environment_modes(f.jacobian, names, e["n_modes"]) for f in fits]  # each fold tests its own modes
    for k in modes["mode"].unique():
        directions[f"mode {k}"] = [m.loc[m["mode"] == k, "weight"].to_numpy() for m in own]
    held = [env.HeldOut.of(f.module, s[f.hold], u[f.hold], c[f.hold]) for f in fits]
    test = env.conditional_permutation_test(held, directions, int(e["n_permutations"]), seed,
                                            int(e["stratum_cells"])).set_index("direction")
    modes["partner_p_value"] = modes["partner"].map(test["p_value"])
    modes["partner_nll_gain"] = modes["partner"].map(test["nll_gain"])
    modes["mode_p_value"] = modes["mode"].map(lambda k: test.loc[f"mode {k}", "p_value"])
    return name_partners(modes, e["alpha"]), fits


def name_partners(modes: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """``significant``: mode 1 passes alpha and the partner's column alpha / columns (Bonferroni);
    ``named``: significant and carrying more than an equal share of mode 1 (weight^2 > 1 / columns)."""
    n_columns = modes["partner"].nunique()
    modes["significant"] = ((modes["mode"] == 1) & (modes["mode_p_value"] < alpha)
                            & (modes["partner_p_value"] < alpha / n_columns))
    modes["named"] = modes["significant"] & (modes["weight"] ** 2 > 1.0 / n_columns)
    return modes


def _fold_fit(s: np.ndarray, u: np.ndarray, c: np.ndarray, hold: np.ndarray, mcfg: env.EnvironmentConfig) -> _FoldFit:
    """Fit on every cell but ``hold``; the drift's Jacobian in c at the training cells."""
    train = np.setdiff1d(np.arange(len(c)), hold)
    module = env.fit_conditioned_dynamics(s[train], u[train], c[train], mcfg)
    z = env.latent_mean(module, s[train])
    return _FoldFit(module, hold, z, env.condition_jacobian(module, z, torch.as_tensor(c[train], dtype=torch.float32)))
