"""VICDYF on simulators it was not designed on: one fit per (simulator, seed), scored against the truth.

The project's own simulator (:mod:`cellfate.simulate.bifurcation`) is where the defaults were
first chosen, so a result that holds only there proves little. This module fits the same model on
``markovmodus`` (third party, :mod:`cellfate.simulate.markov`) and on a stochastic regulatory
cascade (:mod:`cellfate.simulate.cascade`), each with a no-branch negative control, and reports
per fit: the velocity cosine with the true ds/dt, and for each fluctuation score
(:func:`cellfate.dynamics.validation.fluctuation_scores`) where its binned mean peaks in
pseudotime and its ratio in [branch, branch + window] over the rest. The workflow's
``vicdyf_crosscheck`` rule and ``benchmarks/vicdyf_simulators_bench.py`` both call :func:`run`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import anndata as ad
import numpy as np
import pandas as pd

from cellfate.errors import CellfateError

log = logging.getLogger(__name__)
SIMULATORS = ("bifurcation", "markovmodus", "cascade", "markovmodus_linear", "cascade_linear")
#: The issue's target: fluctuation highest within [branch, branch + WINDOW], ratio >= MIN_RATIO.
WINDOW = 0.15
MIN_RATIO = 1.3


def simulate(kind: str, n_cells: int, n_genes: int, seed: int) -> ad.AnnData:
    """The truth AnnData of one simulator run (counts, pseudotime, branch time, true velocity)."""
    if kind == "bifurcation":
        from cellfate.simulate.bifurcation import BifurcationSpec, simulate_bifurcation

        return simulate_bifurcation(BifurcationSpec(n_cells=n_cells, n_genes=n_genes, branch_time=0.4, seed=seed))
    if kind in ("markovmodus", "markovmodus_linear"):
        from cellfate.simulate.markov import MarkovSpec, simulate_markov

        return simulate_markov(MarkovSpec(n_cells=n_cells, n_genes=n_genes, seed=seed, branching=kind == "markovmodus"))
    if kind in ("cascade", "cascade_linear"):
        from cellfate.simulate.cascade import CascadeSpec, simulate_cascade

        return simulate_cascade(CascadeSpec(n_cells=n_cells, n_genes=n_genes, seed=seed, branching=kind == "cascade"))
    raise CellfateError(f"unknown simulator {kind!r} (known: {', '.join(SIMULATORS)})")


#: The fate labels (obs ``branch``) of each branching simulator.
FATES = {"bifurcation": ["alpha", "beta"], "markovmodus": ["A", "C"], "cascade": ["X", "Y"]}


def fit(kind: str, seed: int, *, n_cells: int = 1000, n_genes: int = 200, epochs: int = 150,
        beta_init: float = 0.1, d_scale: float = 0.01, patience: int = 0, diffusion: str = "posterior"):
    """Simulate and fit VICDYF (1 thread); returns (truth restricted to the fitted genes, annotated AnnData, model, CPU s)."""
    import torch

    from cellfate.dynamics.model import VICDYF
    from cellfate.dynamics.preprocess import select_genes
    from cellfate.dynamics.train import TrainingPlan

    torch.set_num_threads(1)
    truth = simulate(kind, n_cells, n_genes, seed)
    adata = select_genes(truth, min_shared_counts=20)
    t0 = time.process_time()
    model = VICDYF(adata, beta_init=beta_init, d_scale=d_scale, diffusion=diffusion, seed=42)
    model.train(TrainingPlan(epochs_phase1=epochs, epochs_phase2=epochs, patience=patience, seed=seed, progress=False))
    model.annotate(adata, n_samples=10, seed=seed, embed=False)
    cpu = time.process_time() - t0
    return truth[adata.obs_names, adata.var_names].copy(), adata, model, cpu


def driver_auroc(scores: np.ndarray, is_driver: np.ndarray) -> float:
    """P(a planted driver scores above a random other gene): the Mann-Whitney AUROC (ties count half)."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(is_driver.sum()), int((~is_driver).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[is_driver].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def driver_metrics(model, adata: ad.AnnData, truth: ad.AnnData, fates: list[str], seed: int = 0) -> dict[str, float]:
    """Per fate: AUROC of the planted drivers in VICDYF's ranking toward the fate, and their share in its top 10%."""
    from cellfate.dynamics import fluctuation as fl

    adata.obs["branch"] = truth.obs["branch"].astype(str).to_numpy()
    genes, _ = fl.analyse(model, adata, fate_key="branch", fates=fates, top_fraction=0.2, seed=seed)
    out = {}
    for fate in fates:
        table = genes[genes["fate"] == fate].set_index("gene_id").loc[adata.var_names]
        is_driver = (truth.var["fate_driver"].astype(str) == fate).to_numpy()
        top = table["rank"].to_numpy() <= max(1, int(round(0.1 * adata.n_vars)))
        out[f"drivers:{fate}:auroc"] = driver_auroc(table["contribution"].to_numpy(), is_driver)
        out[f"drivers:{fate}:top10_share"] = float(top[is_driver].mean()) if is_driver.any() else float("nan")
        out[f"drivers:{fate}:best_rank"] = float(table["rank"].to_numpy()[is_driver].min()) if is_driver.any() else float("nan")
    return out


def fit_and_score(kind: str, seed: int, *, drivers: bool = False, **fit_kwargs) -> dict[str, float | str | bool]:
    """Simulate, fit and score one run (see :func:`fit` for the keyword arguments)."""
    from cellfate.dynamics.validation import fluctuation_localisation, localisation, true_velocity_spread, velocity_cosine

    truth, adata, model, cpu = fit(kind, seed, **fit_kwargs)
    est = np.asarray(adata.layers["vicdyf_mean_velocity"]) * adata.var["vicdyf_gene_scale"].to_numpy()[None, :]
    cos = velocity_cosine(est, np.asarray(truth.layers["true_velocity"]))
    branch = float(truth.uns["simulation"]["branch_time"])
    row: dict[str, float | str | bool] = {
        "simulator": kind, "seed": seed, "beta_init": fit_kwargs.get("beta_init", 0.1),
        "d_scale": fit_kwargs.get("d_scale", 0.01),
        "diffusion": fit_kwargs.get("diffusion", "posterior"), "cells": adata.n_obs, "genes": adata.n_vars,
        "epochs": fit_kwargs.get("epochs", 150), "cpu_s": round(cpu, 1), "velocity_cosine": float(np.nanmean(cos)),
        "branch_time": branch}
    pseudotime = truth.obs["pseudotime"].to_numpy()
    loc = fluctuation_localisation(adata, pseudotime, branch, window=WINDOW)
    spread = true_velocity_spread(np.asarray(truth.layers["true_velocity"]), np.asarray(adata.obsm["X_vicdyf_zl"]))
    loc["true_spread"] = localisation(spread, pseudotime, branch, window=WINDOW)
    for score, values in loc.items():
        row.update({f"{score}:{k}": v for k, v in values.items()})
        row[f"{score}:localised"] = bool(values["peak_in_window"] and values["ratio"] >= MIN_RATIO)
    if drivers and kind in FATES:
        row.update(driver_metrics(model, adata, truth, FATES[kind], seed))
    log.info("%s seed %d: cosine %.3f, raw fluctuation peak %.3f (branch %.2f), ratio %.2f", kind, seed,
             row["velocity_cosine"], row["raw:peak"], branch, row["raw:ratio"])
    return row


def run(simulators: Iterable[str] = SIMULATORS, seeds: Iterable[int] = (0,), **kwargs) -> pd.DataFrame:
    """One row per (simulator, seed); see :func:`fit_and_score` for the columns and keyword arguments."""
    return pd.DataFrame([fit_and_score(kind, seed, **kwargs) for kind in simulators for seed in seeds])


def summary(table: pd.DataFrame, score: str = "raw") -> pd.DataFrame:
    """Per simulator (and settings): mean velocity cosine, and the seeds where ``score`` is localised."""
    keys = [k for k in ("simulator", "beta_init", "d_scale", "diffusion") if k in table]
    grouped = table.groupby(keys, sort=False)
    out = grouped.agg(seeds=("seed", "size"), velocity_cosine=("velocity_cosine", "mean"),
                      velocity_cosine_min=("velocity_cosine", "min"),
                      fluctuation_ratio=(f"{score}:ratio", "mean"), fluctuation_peak=(f"{score}:peak", "median"),
                      localised_seeds=(f"{score}:localised", "sum"), branch_time=("branch_time", "mean"))
    return out.reset_index()
