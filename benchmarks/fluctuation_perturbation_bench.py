"""The fluctuation -> perturbation screen on the demo's outputs, over several seeds of the screen
(which progenitors, decoys and control genes are drawn): how many of VICDYF's drivers are
significant toward their fate, how many decoys (the negative control) are, and how many of the
drivers are the simulator's true drivers of that fate.

Run after the demo (it reads results/): ``PYTHONPATH=src .venv/bin/python
benchmarks/fluctuation_perturbation_bench.py --seeds 0 1 2 3 4``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import pandas as pd
import torch

from cellfate.foundation.fate_screen import run, set_tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--n-drivers", type=int, default=10)
    parser.add_argument("--model", default=None, help="model folder (default: <results>/pretrain/model)")
    parser.add_argument("--hidden-layer", type=int, default=None, help="hidden state read (default: the screen's)")
    parser.add_argument("--shift", default="goal", help="goal | contrast (toward the fate minus toward the other)")
    parser.add_argument("--medians", default=None, help="gene medians (default: <results>/tokenize/gene_medians.tsv)")
    parser.add_argument("--max-tokens", type=int, default=64, help="token budget (the demo model was trained at 64)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    r = Path(args.results)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            table = run(
                str(r / "dynamics/bifurcation.h5ad"),
                str(r / "dynamics/bifurcation/fluctuation_genes.tsv"),
                args.model or str(r / "pretrain/model"),
                args.medians or str(r / "tokenize/gene_medians.tsv"),
                f"{tmp}/t.tsv",
                spec={"fate_key": "branch", "fates": ["alpha", "beta"], "n_drivers": args.n_drivers, "seed": seed,
                      "shift": args.shift}
                | ({} if args.hidden_layer is None else {"hidden_layer": args.hidden_layer}),
                settings={"device": "cpu", "max_tokens": args.max_tokens, "pooling": "mean"},
                truth_h5ad=str(r / "simulated/bifurcation/truth.h5ad"),
            )
        sets = set_tests(table).set_index(["fate", "group"])["set_fdr"]
        for fate, part in table.groupby("fate"):
            drivers, decoys = part[part["group"] == "driver"], part[part["group"] == "decoy"]
            rows.append(
                {
                    "seed": seed,
                    "fate": fate,
                    "drivers_significant": f"{int(drivers['significant'].sum())}/{len(drivers)}",
                    "true_drivers_significant": f"{int((drivers['significant'] & (drivers['true_fate_driver'] == fate)).sum())}"
                    f"/{int((drivers['true_fate_driver'] == fate).sum())}",
                    "driver_max_fdr": drivers["fdr"].max(),
                    "decoys_significant": f"{int(decoys['significant'].sum())}/{len(decoys)}",
                    "decoy_min_fdr": decoys["fdr"].min(),
                    "driver_set_fdr": sets[(fate, "driver")],
                    "decoy_set_fdr": sets[(fate, "decoy")],
                }
            )
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.2g}"))
    print(f"driver sets {int((frame['driver_set_fdr'] < 0.05).sum())}/{len(frame)}, "
          f"decoy sets {int((frame['decoy_set_fdr'] < 0.05).sum())}/{len(frame)}")


if __name__ == "__main__":
    main()
