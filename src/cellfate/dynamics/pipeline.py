"""One function per workflow rule of the dynamics stage: files in, files out, the ``dynamics`` config.

Config keys (``dynamics:`` block, documented in config/schema.yaml): gene selection
(``min_shared_counts``, ``n_top_genes``), model (``n_latent``, ``n_hidden``, ``likelihood``,
``velocity``, ``beta_init``, ``diffusion``), training (``epochs_phase1``, ``epochs_phase2``, ``batch_size``, ``lr``,
``holdout_fraction``, ``patience``, ``seed``, ``device``), outputs (``n_samples``,
``n_neighbors``), the fluctuation analysis (``fate_key``, ``fates``, ``top_fraction``,
``leiden_resolution``) and the check on simulators VICDYF was not designed on (``crosscheck``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import anndata as ad
import pandas as pd

from cellfate.dynamics import fluctuation as fluct
from cellfate.dynamics.model import VICDYF
from cellfate.dynamics.outfile import write_annotated
from cellfate.dynamics.preprocess import select_genes
from cellfate.dynamics.train import TrainingPlan
from cellfate.dynamics.validation import validate as validate_truth
from cellfate.errors import CellfateError
from cellfate.io import write_table
from cellfate.readers import read_velocity_h5ad

log = logging.getLogger(__name__)
Config = Mapping[str, Any]

DEFAULTS: dict[str, Any] = {
    "min_shared_counts": 20, "n_top_genes": 2000, "n_latent": 10, "n_hidden": 50, "likelihood": "poisson",
    "velocity": "jvp", "beta_init": 0.1, "diffusion": "posterior", "epochs_phase1": 500, "epochs_phase2": 500, "batch_size": 100, "lr": 1e-3,
    "holdout_fraction": 0.05, "patience": 0, "seed": 42, "device": "auto", "n_samples": 10, "n_neighbors": 30,
    "fate_key": None, "fates": [], "top_fraction": 0.2, "leiden_resolution": 1.0,
    "crosscheck": {},
}
#: The cross-simulator check's settings (``dynamics.crosscheck``), over these defaults.
CROSSCHECK_DEFAULTS: dict[str, Any] = {
    "simulators": ["bifurcation", "markovmodus", "cascade", "markovmodus_linear", "cascade_linear"],
    "seeds": [0], "n_cells": 800, "n_genes": 150, "epochs": 150,
}


def settings(cfg: Config | None) -> dict[str, Any]:
    """The config block over the defaults; an unknown key is an error (a typo would be ignored)."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise CellfateError(f"unknown dynamics setting(s): {sorted(unknown)}")
    return {**DEFAULTS, **cfg}


def training_plan(cfg: Config, progress: bool = True) -> TrainingPlan:
    keys = ("epochs_phase1", "epochs_phase2", "batch_size", "lr", "holdout_fraction", "patience", "seed", "device")
    return TrainingPlan(**{k: cfg[k] for k in keys}, progress=progress)


def fit(velocity_h5ad: str | os.PathLike[str], model_dir: str | os.PathLike[str], out_h5ad: str | os.PathLike[str],
        cfg: Config | None = None) -> VICDYF:
    """Rule ``vicdyf_fit``: select genes, train, write the vicdyf_* outputs and save the model.

    Memory (benchmarks/README.md, "Memory of vicdyf_fit"): the input's matrices move into the gene
    selection (never input and selection whole together) and the four output layers go to the
    output file batch by batch (cellfate.dynamics.outfile), so the peak is the training's: the
    integer counts and the model's float32 counts and log1p(s).
    """
    cfg = settings(cfg)
    adata = read_velocity_h5ad(velocity_h5ad)  # one line for a missing/broken/0-cell file
    adata = select_genes(adata, min_shared_counts=cfg["min_shared_counts"], n_top_genes=cfg["n_top_genes"],
                         source=str(velocity_h5ad), consume=True)
    model = VICDYF(adata, n_latent=cfg["n_latent"], n_hidden=cfg["n_hidden"], likelihood=cfg["likelihood"],
                   velocity=cfg["velocity"], beta_init=cfg["beta_init"], diffusion=cfg["diffusion"], seed=cfg["seed"],
                   source=str(velocity_h5ad))
    model.train(training_plan(cfg))
    write_annotated(model, adata, out_h5ad, n_samples=cfg["n_samples"], seed=cfg["seed"],
                    n_neighbors=cfg["n_neighbors"])
    model.save(model_dir, overwrite=True)
    return model


def fluctuation(dynamics_h5ad: str | os.PathLike[str], model_dir: str | os.PathLike[str],
                genes_tsv: str | os.PathLike[str], clusters_tsv: str | os.PathLike[str], cfg: Config | None = None) -> None:
    """Rule ``vicdyf_fluctuation``: top fluctuating cells, their clusters, genes ranked per fate."""
    cfg = settings(cfg)
    if not cfg["fate_key"] or not cfg["fates"]:
        raise CellfateError("set dynamics.fate_key and dynamics.fates to rank genes toward each fate")
    adata = ad.read_h5ad(dynamics_h5ad)
    model = VICDYF.load(model_dir, adata)
    genes, clusters = fluct.analyse(model, adata, fate_key=cfg["fate_key"], fates=list(cfg["fates"]),
                                    top_fraction=cfg["top_fraction"], resolution=cfg["leiden_resolution"],
                                    seed=cfg["seed"], source=str(dynamics_h5ad))
    write_table(genes, genes_tsv)
    write_table(clusters, clusters_tsv)


def validate(dynamics_h5ad: str | os.PathLike[str], truth_h5ad: str | os.PathLike[str],
             genes_tsv: str | os.PathLike[str], out_tsv: str | os.PathLike[str]) -> pd.DataFrame:
    """Rule ``vicdyf_validate``: the metrics against the simulated truth (see validation.py)."""
    adata = ad.read_h5ad(dynamics_h5ad)
    truth = ad.read_h5ad(truth_h5ad)
    genes = pd.read_csv(genes_tsv, sep="\t")
    metrics, ranks, _ = validate_truth(adata, truth, genes, source=str(truth_h5ad))
    table = pd.concat([metrics, ranks.assign(metric=lambda f: "driver_rank:" + f["fate"] + ":" + f["symbol"],
                                             value=lambda f: f["rank"])[["metric", "value"]]], ignore_index=True)
    write_table(table, out_tsv)
    return table


def crosscheck(out_tsv: str | os.PathLike[str], cfg: Config | None = None) -> pd.DataFrame:
    """Rule ``vicdyf_crosscheck``: fit and score VICDYF on each simulator (cellfate.dynamics.crosscheck)."""
    from cellfate.dynamics import crosscheck as cc

    cfg = settings(cfg)
    check = dict(cfg["crosscheck"] or {})
    unknown = set(check) - set(CROSSCHECK_DEFAULTS)
    if unknown:
        raise CellfateError(f"unknown dynamics.crosscheck setting(s): {sorted(unknown)}")
    check = {**CROSSCHECK_DEFAULTS, **check}
    table = cc.run(check["simulators"], check["seeds"], n_cells=check["n_cells"], n_genes=check["n_genes"],
                   epochs=check["epochs"], beta_init=cfg["beta_init"], diffusion=cfg["diffusion"])
    write_table(table, out_tsv)
    return table
