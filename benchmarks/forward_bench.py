"""Forward analysis against the simulator's truth over seeds (issue 16, items 1-3).

For each seed: the environment tissue (demo settings), the forward analysis from its reference
(condition: the true partner densities, or DeepCOLOR's colocalization with --condition
colocalization, which fits DeepCOLOR first), and the simulator re-run under each intervention.
Prints one row per seed and intervention and the pass counts against the issue's targets.

    PYTHONPATH=src .venv/bin/python benchmarks/forward_bench.py --seeds 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from cellfate.simulate.environment import simulate_environment, spec_from_config
from cellfate.spatial import forward_pipeline as fp
from cellfate.spatial import pipeline

INTERVENTIONS = [
    {"name": "fibroblast removed", "kind": "remove", "partner": "fibroblast"},
    {"name": "fibroblast x2", "kind": "scale", "partner": "fibroblast", "factor": 2.0},
    {"name": "Col1a1 blocked", "kind": "block_ligand", "ligand": "Col1a1"},
    {"name": "macrophage removed", "kind": "remove", "partner": "macrophage"},
    {"name": "T cell x2", "kind": "scale", "partner": "T cell", "factor": 2.0},
]


def one_seed(seed: int, args: argparse.Namespace, work: Path) -> tuple[pd.DataFrame, float, float]:
    """(alpha rows of the shift table, per-progenitor Spearman of p_alpha with the truth, AUROC of
    the environmental share for niche choosers against random choosers, nan without them)."""
    sim = {"seed": seed, "environment": {"insensitive_share": args.insensitive} if args.insensitive else {}}
    spots, ref, _ = simulate_environment(spec_from_config(sim))
    path, p_mat = work / f"reference_{seed}.h5ad", None
    ref.write_h5ad(path)
    if args.condition != "truth":  # the chain: DeepCOLOR (demo settings) maps the cells first
        spots.write_h5ad(work / f"spots_{seed}.h5ad")
        demo = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())["spatial"]
        p_mat, mapped = work / f"p_mat_{seed}.npy", work / f"cells_{seed}.h5ad"
        pipeline.deepcolor(path, work / f"spots_{seed}.h5ad", work / f"model_{seed}", mapped, p_mat,
                           work / f"mapped_{seed}.h5ad", {k: demo[k] for k in ("seed", "deepcolor")})
        path = mapped
    cfg = {"seed": 42, "environment": {"epochs_vae": args.epochs, "epochs_dynamics": args.epochs},
           "forward": {"condition": args.condition, "interventions": INTERVENTIONS, "n_fits": args.fits,
                       "n_paths": args.paths, "n_conditions": args.conditions, "decomposition_paths": 20,
                       "readout": args.readout, "resample": args.resample}}
    table = fp.forward_analysis(path, p_mat, work / f"table_{seed}.tsv", work / f"cells_{seed}.tsv", cfg, sim)
    cells = pd.read_csv(work / f"cells_{seed}.tsv", sep="\t")
    cells = cells[cells["is_progenitor"]]
    auroc = np.nan
    if "environmental_share" in cells and cells["niche_chooser"].nunique() == 2:
        auroc = roc_auc_score(cells["niche_chooser"].astype(bool), cells["environmental_share"])
    rho = float(spearmanr(cells["p_alpha"], cells["true_p_alpha"])[0])
    return table[table["fate"] == "alpha"].assign(seed=seed), rho, float(auroc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--condition", default="truth")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--paths", type=int, default=30, help="paths per progenitor (--readout paths)")
    parser.add_argument("--readout", default="graph", choices=["graph", "paths"],
                        help="fate probabilities on the cells' graph (default) or from free Euler-Maruyama paths")
    parser.add_argument("--resample", default="bootstrap", choices=["bootstrap", "none"],
                        help="each fit on a bootstrap sample of the cells (default) or on every cell")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--insensitive", type=float, default=0.0,
                        help="share of lineage cells that choose at random (the decomposition's validation)")
    parser.add_argument("--conditions", type=int, default=0, help="environments per progenitor (0: no decomposition)")
    args = parser.parse_args()
    rows, rhos, aurocs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            start = time.perf_counter()
            table, rho, auroc = one_seed(seed, args, Path(tmp))
            rows.append(table)
            rhos.append(rho)
            aurocs.append(auroc)
            print(f"seed {seed}: {time.perf_counter() - start:.0f} s, "
                  f"per-progenitor Spearman(p_alpha, true) {rho:.2f}, "
                  f"decomposition AUROC {auroc:.2f}", flush=True)
    out = pd.concat(rows, ignore_index=True)
    cols = ["seed", "intervention", "predicted_share", "shift", "low", "high", "true_shift", "sign_ok", "within_2x",
            "covers_zero", "absorbed"]
    print(out[cols].round(3).to_string(index=False))
    effect, null = out[~out["true_null"].astype(bool)], out[out["true_null"].astype(bool)]
    for name, group in effect.groupby("intervention", sort=False):
        print(f"{name}: right sign {int(group['sign_ok'].sum())}/{len(group)} (target >= 9/10), "
              f"within 2x {int(group['within_2x'].sum())}/{len(group)}")
    for name, group in null.groupby("intervention", sort=False):
        print(f"{name} (no effect): interval covers 0 {int(group['covers_zero'].sum())}/{len(group)} (target >= 9/10)")
    print(f"per-progenitor Spearman of p_alpha with the true p_alpha: median {np.median(rhos):.2f}, "
          f"range {min(rhos):.2f} to {max(rhos):.2f}")
    if not np.isnan(aurocs).all():
        print(f"environmental share, niche vs random choosers: AUROC >= 0.8 in {sum(a >= 0.8 for a in aurocs)}"
              f"/{len(aurocs)} (median {np.nanmedian(aurocs):.2f})")


if __name__ == "__main__":
    main()
