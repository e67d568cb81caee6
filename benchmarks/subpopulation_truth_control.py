"""The driver sub-population's true-density control for a ``deepcolor_bench.py --chain
--subpopulation`` run: condition ``truth`` with the fibroblast column of each lineage cell replaced
by the true sub-population density at its home spot (the same maps, placement and analysis
settings). It says whether the dynamics can name the sub-population when the condition is exact.

    .venv/bin/python benchmarks/subpopulation_truth_control.py RUN 0 1 2   # RUN/positive_<seed>
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
import yaml

from cellfate.spatial import pipeline

HERE = Path(__file__).resolve().parent


def control(folder: Path, out: Path, cfg: dict, blurred: bool = False) -> dict:
    """Mode 1's named columns and p-values on the sub-population's true density (at each cell's
    home; ``blurred``: averaged over the analysis' state-blind placement of the cell instead)."""
    out.mkdir(parents=True, exist_ok=True)
    cells, spots = ad.read_h5ad(folder / "cells.h5ad"), ad.read_h5ad(folder / "spots.h5ad")
    density = pd.DataFrame(cells.obsm["true_partner_density"], index=cells.obs_names).copy()
    home_spot = cells.obs["home_spot"].astype(str).to_numpy()
    lineage = home_spot != ""
    home = spots.obs_names.get_indexer(home_spot[lineage])
    sub = spots.obs["subpopulation_density"].to_numpy()
    if blurred:
        placed = _placed(folder, cfg)[3]
        density.loc[lineage, "fibroblast"] = np.asarray(placed, dtype=float) @ sub / np.asarray(placed).sum(1)
    else:
        density.loc[lineage, "fibroblast"] = sub[home]
    cells.obsm["true_partner_density"] = density
    cells.write_h5ad(out / "cells.h5ad")
    pipeline.environment(out / "cells.h5ad", folder / "p_mat.npy", folder / "lt.tsv", out / "modes.tsv",
                         out / "genes.tsv", out / "ligands.tsv", cfg, spots_h5ad=folder / "spots.h5ad")
    modes = pd.read_csv(out / "modes.tsv", sep="\t")
    first = modes[modes["mode"] == 1]
    return {"named": ",".join(first.loc[first["named"], "partner"]) or "-",
            "mode1_p": float(first["mode_p_value"].iloc[0]),
            **{f"p_{r.partner}": float(r.partner_p_value) for r in first.itertuples()}}


def map_correlations(folder: Path) -> dict:
    """Correlation over spots of the log mean DeepCOLOR map of the true sub-population cells with
    the log sub-population density (``map_sub_own``) and with the log density of the rest of the
    driver's cells (``map_sub_rest``): does the map place the sub-population where it lives?"""
    cells, spots = ad.read_h5ad(folder / "cells.h5ad"), ad.read_h5ad(folder / "spots.h5ad")
    p_mat = np.load(folder / "p_mat.npy")
    sub = cells.obs["driver_subpopulation"].to_numpy(dtype=bool)
    own = np.log(spots.obs["subpopulation_density"].to_numpy())
    share = float(spots.uns["environment_truth"]["driver_subpopulation"])
    whole = spots.obsm["true_partner_density"]["fibroblast"].to_numpy()
    rest = np.log(np.maximum(whole - share * np.exp(own), 1e-3))
    mapped = np.log(p_mat[sub].mean(0) + 1e-6)
    return {"map_sub_own": float(np.corrcoef(mapped, own)[0, 1]),
            "map_sub_rest": float(np.corrcoef(mapped, rest)[0, 1])}


def _placed(folder: Path, cfg: dict) -> tuple:
    """The analysis' own state-blind placement of the modelled cells and its condition
    ``clusters``: (cells, spots, lineage mask, placement cells x spots, c, column names)."""
    s = pipeline.settings({**cfg, "environment": {**cfg["environment"], "condition": "clusters"}})
    e = s["environment"]
    cells, spots = ad.read_h5ad(folder / "cells.h5ad"), ad.read_h5ad(folder / "spots.h5ad")
    labels, lineage, partners = pipeline._lineage(cells, e, s, folder)
    spliced = pipeline.dense(cells[lineage].layers["spliced"])
    folds = pipeline.env.crossfit_folds(int(lineage.sum()), int(e["folds"]), s["seed"])
    keep = np.all([np.delete(spliced, f, 0).sum(0) >= max(1, e["min_counts"]) for f in folds], axis=0)
    placed = pipeline.lineage_placement(cells, lineage, labels, partners, keep, e, folder / "spots.h5ad",
                                        folder / "cells.h5ad", folder / "p_mat.npy")
    c, names, _ = pipeline.condition_matrix(cells, lineage, labels, partners, e, folder / "p_mat.npy", folder,
                                            s["seed"], placed)
    return cells, spots, lineage, placed, c, names


def condition_correlations(folder: Path, cfg: dict) -> dict:
    """Over the modelled cells: correlation of each driver-cluster column of the condition
    ``clusters`` (as the analysis builds it: state-blind placement, partner clusters) with the log
    true sub-population density at the cell's home (``c_<column>``), and the ceiling of that
    placement: the correlation when the partner map is the true sub-population density itself,
    with the modelled cells placed state-blind (``c_exact_state_blind``) or by their own DeepCOLOR
    rows (``c_exact_rows``). Says how much of the condition the lineage placement loses."""
    cells, spots, lineage, placed, c, names = _placed(folder, cfg)
    home = spots.obs_names.get_indexer(cells.obs["home_spot"].astype(str).to_numpy()[lineage])
    dens = spots.obs["subpopulation_density"].to_numpy()
    truth = np.log(dens[home])
    out = {f"c_{n}": float(np.corrcoef(c[:, i], truth)[0, 1])
           for i, n in enumerate(names) if n.startswith("fibroblast")}
    rows = np.load(folder / "p_mat.npy")[lineage]
    for name, where in (("state_blind", placed), ("rows", rows)):
        exact = np.log2(np.maximum(np.asarray(where, dtype=float) @ (dens / dens.sum()) * len(dens), 1e-300))
        out[f"c_exact_{name}"] = float(np.corrcoef(exact, truth)[0, 1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a deepcolor_bench.py --chain --subpopulation --out folder")
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN/truth_subpopulation")
    parser.add_argument("--blurred", action="store_true",
                        help="the true density averaged over each cell's state-blind placement (default: at its home)")
    parser.add_argument("--maps-only", action="store_true",
                        help="only the map and condition correlations (no true-density analysis; seconds per seed)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    cfg = yaml.safe_load((HERE.parent / "config" / "config.yaml").read_text())["spatial"]
    cfg["environment"] = {**cfg["environment"], "placement": "state_blind", "folds": 10, "condition": "truth"}
    out = args.out or args.run / "truth_subpopulation"
    for seed in args.seeds:
        folder = args.run / f"positive_{seed}"
        row = {} if args.maps_only else control(folder, out / f"positive_{seed}", cfg, args.blurred)
        row.update(map_correlations(folder))
        if args.maps_only:
            row.update(condition_correlations(folder, cfg))
        print(json.dumps({"seed": seed, **row}), flush=True)


if __name__ == "__main__":
    main()
