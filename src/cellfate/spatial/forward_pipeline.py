"""Rule ``forward_analysis``: fitted environment dynamics run forward, under interventions.

Outputs: a table with one row per intervention and fate (predicted change of the tissue's share of
that fate with its interval (Student's t over the fits) and, on the simulated tissue, the true change and whether
the prediction passes), and a table of the progenitors (fate probabilities, the split of their
fate uncertainty into environmental and intrinsic parts, a 2-d layout of their latent state).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from cellfate.errors import CellfateError
from cellfate.io import write_table
from cellfate.spatial import environment as env
from cellfate.spatial import forward as fw
from cellfate.counts import dense
from cellfate.spatial.pipeline import condition_matrix, cell_type_labels, per10k, settings

log = logging.getLogger(__name__)
PathLike = str | os.PathLike[str]

DEFAULTS: dict[str, Any] = {
    "condition": None, "progenitors": ["progenitor"], "fates": ["alpha", "beta"], "n_fits": 5, "n_paths": 50,
    "step": 0.5, "horizon": 20.0, "max_steps": 1000, "cells_per_cluster": 15, "min_share": 0.8,
    "level": 0.95,
    "sender_share": 0.5, "subspace": 1.0, "n_conditions": 8, "decomposition_paths": 20, "interventions": [],
    "readout": "graph", "graph_neighbours": 15, "graph_step": 4.0, "graph_mix": 0.2, "graph_conditions": 0,
    "resample": "bootstrap",
}
RESAMPLES = ("bootstrap", "none")
READOUTS = ("graph", "paths")
SCALES = {"truth": "ln", "colocalization": "log2", "clusters": "log2", "neighbourhood": "share"}
NULL_TOLERANCE = 1e-9  # a true shift this small is no effect (a partner that does not act)


def forward_settings(cfg: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the spatial settings, the ``forward`` block over its defaults)."""
    cfg = dict(cfg or {})
    block = dict(cfg.pop("forward", None) or {})
    unknown = set(block) - set(DEFAULTS)
    if unknown:
        raise CellfateError(f"unknown spatial.forward setting(s): {sorted(unknown)}")
    f = {**DEFAULTS, **block}
    names = [str(i.get("name", "")) for i in f["interventions"]]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise CellfateError("every spatial.forward.interventions entry needs a distinct name")
    if f["resample"] not in RESAMPLES:
        raise CellfateError(f"spatial.forward.resample must be one of {RESAMPLES}, not {f['resample']!r}")
    if f["readout"] not in READOUTS:
        raise CellfateError(f"spatial.forward.readout must be one of {READOUTS}, not {f['readout']!r}")
    for item in f["interventions"]:
        if item.get("kind") not in fw.KINDS:
            raise CellfateError(f"spatial.forward intervention {item.get('name')!r}: kind must be one of {fw.KINDS}")
    return settings(cfg), f


def read_lineage(cells_h5ad: PathLike, p_mat: PathLike | None, s_cfg: dict, f: dict
                 ) -> tuple[ad.AnnData, np.ndarray, np.ndarray, fw.Condition]:
    """The modelled cells (AnnData view), their labels, the lineage mask and their raw condition."""
    e = s_cfg["environment"]
    cells = ad.read_h5ad(cells_h5ad)
    labels = cell_type_labels(cells, s_cfg["cell_type_key"], cells_h5ad).to_numpy()
    lineage = np.isin(labels, e["cells"])
    for group in ("progenitors", "fates"):
        missing = [t for t in f[group] if t not in set(labels[lineage])]
        if missing:
            raise CellfateError(f"spatial.forward.{group}: no cell of type(s) {missing} among "
                                "spatial.environment.cells",
                                cells_h5ad)
    how = f["condition"] or e["condition"]
    partners = e["partners"] or [t for t in pd.unique(labels) if t not in e["cells"]]
    raw, names, types = condition_matrix(cells, lineage, labels, list(partners), {**e, "condition": how}, p_mat or "",
                                   cells_h5ad, s_cfg["seed"])
    return cells, labels, lineage, fw.Condition(np.asarray(raw, dtype=float), list(names), list(types),
                                                SCALES.get(how, "onehot"))


def fit_models(s: np.ndarray, u: np.ndarray, cond: fw.Condition, e: dict, n_fits: int, seed: int,
               resample: str = "bootstrap") -> list[tuple[Any, np.ndarray | None]]:
    """``n_fits`` seeded fits of the conditioned dynamics, each with the rows it was trained on
    (None: every cell once).

    ``bootstrap``: each fit on its own bootstrap sample of the modelled cells. Fits of one sample
    differ only by training noise, so they agree on whatever that tissue sample happens to say
    (a partner with no effect gets the same small spurious share of the fate in every fit, and an
    interval over such fits excludes 0); fits of resampled cells also carry the sampling error of
    the tissue itself. ``none``: every fit on every cell.
    """
    mcfg = env.EnvironmentConfig(**{k: e[k] for k in ("n_latent", "n_hidden", "epochs_vae", "epochs_dynamics",
                                                       "batch_size", "lr", "patience")}, seed=seed)
    c = cond.standardised()
    fits = []
    for k in range(max(1, int(n_fits))):
        rows = np.sort(np.random.default_rng(seed + k).integers(0, len(s), len(s))) if resample == "bootstrap" else None
        picked = slice(None) if rows is None else rows
        fits.append((env.fit_conditioned_dynamics(s[picked], u[picked], c[picked],
                                                  dataclasses.replace(mcfg, seed=seed + k), progress=False), rows))
    return fits


def senders_of(cells: ad.AnnData, labels: np.ndarray, partners: list[str], share: float) -> dict[str, list[str]]:
    """Ligand (symbol) -> the partner types that express it (see :func:`forward.ligand_senders`)."""
    norm = per10k(cells.X)
    norm = np.asarray(norm.toarray() if hasattr(norm, "toarray") else norm)
    symbols = cells.var["symbol"].astype(str).to_numpy() if "symbol" in cells.var else np.asarray(cells.var_names)
    frame = pd.DataFrame(norm, columns=symbols)
    frame = frame.loc[:, ~frame.columns.duplicated()]
    return fw.ligand_senders(frame, labels, partners, share)


@dataclasses.dataclass
class FitRun:
    """One fit's forward runs: the progenitors' fate probabilities (cells x fates) untreated and
    per intervention, and the share of paths absorbed within the horizon (1 on the graph)."""

    base: np.ndarray
    treated: dict[str, np.ndarray]
    absorbed: float
    decomposition: pd.DataFrame | None = None
    weights: np.ndarray | None = None  # per progenitor: its count in the fit's bootstrap sample

    @property
    def probabilities(self) -> np.ndarray:
        return self.base


def _graph_reader(module: Any, z: np.ndarray, terminals: fw.Terminals, cond: fw.Condition, f: dict
                  ) -> tuple[Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]], fw.StateGraph]:
    """(cell indices, standardised conditions) -> (fate probabilities, absorbed share 1) on the
    cells' graph (:func:`forward.graph_fates`), and the graph."""
    graph = fw.state_graph(module, z, cond.standardised(), int(f["graph_neighbours"]), float(f["graph_step"]))
    log.info("forward: graph of %d cells, %d edges, hop dt %.3g", len(z), len(graph.rows), graph.dt)
    return lambda idx, c: (fw.graph_fates(module, z, terminals, graph, idx, c, float(f["graph_mix"])), 1.0), graph


def _path_reader(module: Any, z: np.ndarray, terminals: fw.Terminals, cond: fw.Condition, starts: np.ndarray,
                 f: dict, seed: int) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]:
    """The same from Euler-Maruyama paths (:func:`forward.integrate`; one seed for every call:
    common random numbers between the arms)."""
    cfg = fw.ForwardConfig(n_paths=int(f["n_paths"]), step=float(f["step"]), horizon=float(f["horizon"]),
                           max_steps=int(f["max_steps"]), seed=seed)
    dt, n_steps = fw.time_grid(module, z, cond.standardised(), z[starts], terminals, cfg)
    log.info("forward: %d paths per cell, %d steps of dt %.3g", cfg.n_paths, n_steps, dt)

    def read(idx: np.ndarray, c: np.ndarray, n_paths: int = cfg.n_paths) -> tuple[np.ndarray, float]:
        out, absorbed = fw.integrate(module, torch.as_tensor(z[idx], dtype=torch.float32),
                                     torch.as_tensor(c, dtype=torch.float32), terminals, dt, n_steps, n_paths, seed)
        return fw.fate_probabilities(out, len(terminals.fates)), float(absorbed.mean())
    return read


def decomposition(read: Callable, c_starts: np.ndarray, starts: np.ndarray, f: dict, seed: int,
                  graph_parts: tuple | None = None) -> pd.DataFrame:
    """The progenitors' uncertainty decomposition (:func:`forward.uncertainty_parts`). On the
    graph (``graph_parts``: module, z, terminals, graph) every progenitor is run under the same
    environments, every progenitor's condition (or ``graph_conditions`` of them), each one solve;
    on paths, under its own and ``n_conditions`` - 1 drawn conditions, ``decomposition_paths`` each."""
    if graph_parts is not None:
        module, z, terminals, graph = graph_parts
        env_idx = fw.shared_conditions(len(starts), int(f["graph_conditions"]), seed)
        return fw.uncertainty_parts(fw.fates_per_condition(module, z, terminals, graph, starts, c_starts[env_idx],
                                                           float(f["graph_mix"])))
    n_c = int(f["n_conditions"])
    draws = fw.condition_draws(len(starts), n_c, seed)
    p = read(np.repeat(starts, n_c), c_starts[draws.ravel()], int(f["decomposition_paths"]))[0]
    return fw.uncertainty_parts(p.reshape(len(starts), n_c, -1))


def run_fit(module: Any, s: np.ndarray, labels: np.ndarray, cond: fw.Condition, progenitors: np.ndarray, f: dict,
            senders: dict[str, list[str]], seed: int, decompose: bool = False) -> tuple[FitRun, np.ndarray]:
    """Read one fit's fate probabilities from the progenitors, untreated and under every
    intervention (``readout``: on the cells' graph, or by free paths), and optionally the
    uncertainty decomposition. Returns the runs and the fit's latent means."""
    z = env.latent_mean(module, s).cpu().numpy()
    terminals = fw.terminal_states(z, labels, f["progenitors"], f["fates"], int(f["cells_per_cluster"]),
                                   float(f["min_share"]), seed=seed, subspace=float(f["subspace"]))
    starts = np.flatnonzero(progenitors)
    graph_parts = None
    if f["readout"] == "graph":
        read, graph = _graph_reader(module, z, terminals, cond, f)
        graph_parts = (module, z, terminals, graph)
    else:
        read = _path_reader(module, z, terminals, cond, starts, f, seed)
    raw0 = cond.raw[progenitors]
    base, absorbed = read(starts, cond.standardised(raw0))
    treated = {i["name"]: read(starts, cond.standardised(fw.intervene(cond, raw0, i, senders)))[0]
               for i in f["interventions"]}
    run = FitRun(base, treated, absorbed)
    if decompose:
        run.decomposition = decomposition(read, cond.standardised(raw0), starts, f, seed, graph_parts)
    log.info("forward: %d progenitors, %.0f%% absorbed", len(starts), 100 * run.absorbed)
    return run, z


def truth_shares(sim: Mapping[str, Any], interventions: list[dict]) -> dict[str, dict[str, float]]:
    """The simulated tissue's true fate shares, untreated ('') and under every intervention the
    simulator can apply (an experimental-condition switch has no simulated counterpart)."""
    from cellfate.simulate.environment import Intervention, spec_from_config, true_fate_share

    spec = spec_from_config(dict(sim))
    out = {"": true_fate_share(spec)}
    for item in interventions:
        if item["kind"] == "condition":
            continue
        iv = Intervention(item["kind"], item.get("partner"), float(item.get("factor", 2.0)), item.get("ligand"))
        out[item["name"]] = true_fate_share(spec, iv)
    return out


def shift_table(runs: list[FitRun], f: dict, truth: dict[str, dict[str, float]] | None) -> pd.DataFrame:
    """One row per intervention and fate: predicted shares and shift with its interval,
    and on a simulated tissue the true shift and the validation checks."""
    rows = []
    base = np.stack([r.base for r in runs])  # fits x progenitors x fates
    weights = np.stack([r.weights for r in runs]) if all(r.weights is not None for r in runs) else None
    for item in f["interventions"]:
        treated = np.stack([r.treated[item["name"]] for r in runs])
        for k, fate in enumerate(f["fates"]):
            shift, low, high = fw.shift_interval(base[..., k], treated[..., k], float(f["level"]), weights)
            share = float(base[..., k].mean())
            low, high = max(low, -share), min(high, 1.0 - share)  # a treated share lies in [0, 1]
            row = {"intervention": item["name"], "kind": item["kind"],
                   "target": item.get("partner") or item.get("ligand") or item.get("value"), "fate": fate,
                   "predicted_share": share, "predicted_share_treated": float(treated[..., k].mean()),
                   "shift": shift, "low": low, "high": high, "relative_shift": shift / max(share, 1e-12),
                   "absorbed": float(np.mean([r.absorbed for r in runs]))}
            if truth is not None and item["name"] in truth:
                row.update(_checks(row, truth[""][fate], truth[item["name"]][fate]))
            rows.append(row)
    return pd.DataFrame(rows)


def _checks(row: dict, true_base: float, true_treated: float) -> dict[str, Any]:
    """The validation of one prediction: right sign and within a factor of 2 of a true effect;
    for a true null, an interval that covers 0."""
    true = true_treated - true_base
    null = abs(true) < NULL_TOLERANCE
    ratio = row["shift"] / true if not null else np.nan
    return {"true_share": true_base, "true_share_treated": true_treated, "true_shift": true, "true_null": null,
            "sign_ok": np.nan if null else float(np.sign(row["shift"]) == np.sign(true)),
            "within_2x": np.nan if null else float(0.5 <= ratio <= 2.0),
            "covers_zero": float(row["low"] <= 0.0 <= row["high"]) if null else np.nan}


def cell_table(cells: ad.AnnData, lineage: np.ndarray, labels: np.ndarray, progenitors: np.ndarray, runs: list[FitRun],
               z: np.ndarray, f: dict, seed: int) -> pd.DataFrame:
    """Every modelled cell with its 2-d latent layout (first fit); progenitors also with their fate
    probabilities (mean over fits) and the uncertainty decomposition: per column the median over
    the fits that have one. The median, not one fit nor the mean: a fit can learn the environment's
    effect on the wrong cells (fits disagreed that way on simulated tissues, benchmarks/README.md),
    and the median of three ignores one such fit."""
    from cellfate.umap_layout import umap_layout

    xy = umap_layout(z, seed=seed)
    out = pd.DataFrame({"cell_id": cells.obs_names[lineage], "cell_type": labels[lineage], "umap1": xy[:, 0],
                        "umap2": xy[:, 1], "is_progenitor": progenitors})
    probs = np.mean([r.probabilities for r in runs], axis=0)
    for k, fate in enumerate(f["fates"]):
        out[f"p_{fate}"] = np.nan
        out.loc[progenitors, f"p_{fate}"] = probs[:, k]
    parts = [r.decomposition for r in runs if r.decomposition is not None]
    for col in parts[0] if parts else []:
        out[col] = np.nan
        out.loc[progenitors, col] = np.median([d[col].to_numpy() for d in parts], axis=0)
    for col in ("true_p_alpha", "niche_chooser"):
        if col in cells.obs:
            out[col] = cells.obs[col].to_numpy()[lineage]
    return out


def forward_analysis(cells_h5ad: PathLike, p_mat: PathLike | None, table_out: PathLike, cells_out: PathLike,
                     cfg: Mapping[str, Any] | None = None, sim: Mapping[str, Any] | None = None,
                     threads: int = 1) -> pd.DataFrame:
    """Rule ``forward_analysis``: fit, integrate from the progenitors untreated and under each
    intervention, write the shift table (validated against the simulator re-run under each
    intervention when ``sim``, the config's ``simulate`` block, is given) and the cell table."""
    s_cfg, f = forward_settings(cfg)
    e = s_cfg["environment"]
    torch.set_num_threads(max(1, int(threads)))
    cells, labels, lineage, cond = read_lineage(cells_h5ad, p_mat, s_cfg, f)
    sub = cells[lineage]
    spliced, unspliced = dense(sub.layers["spliced"]), dense(sub.layers["unspliced"])
    keep = spliced.sum(0) >= max(1, e["min_counts"])
    s, u = spliced[:, keep], unspliced[:, keep]
    lab = labels[lineage]
    progenitors = np.isin(lab, f["progenitors"])
    senders = senders_of(cells, labels, sorted(set(cond.types)), float(f["sender_share"]))
    runs, z_first = [], None
    for k, (module, rows) in enumerate(fit_models(s, u, cond, e, int(f["n_fits"]), s_cfg["seed"], f["resample"])):
        # every fit's on the graph (one solve per condition); on paths the first fit's only: the costly part
        decompose = int(f["n_conditions"]) > 1 and (k == 0 or f["readout"] == "graph")
        run, z = run_fit(module, s, lab, cond, progenitors, f, senders, s_cfg["seed"] + k, decompose)
        if rows is not None:
            run.weights = np.bincount(rows, minlength=len(s))[progenitors]
        runs.append(run)
        z_first = z if z_first is None else z_first
    truth = truth_shares(sim, f["interventions"]) if sim and "environment_truth" in cells.uns else None
    table = shift_table(runs, f, truth)
    write_table(table, table_out)
    write_table(cell_table(cells, lineage, labels, progenitors, runs, z_first, f, s_cfg["seed"]), cells_out)
    return table
