"""Peak memory of the whole ``vicdyf_fit`` (pipeline.fit: read, select genes, train, annotate, write) by cell count.

    .venv/bin/python benchmarks/vicdyf_memory_bench.py --cells 10000 20000 --genes 2000

Data the project's bifurcation simulator did not make: one run of the regulatory cascade
(cellfate.simulate.cascade, 1,000 cells) whose cells are resampled (Poisson around each
drawn cell's counts) up to each size. Training is 1 + 1 epochs (memory does not grow with epochs;
the outputs and the embedding are computed in full). Each size's input is written by one process
and fitted by a fresh one, whose ru_maxrss is the peak (the data preparation, in the same process
before 2026-12-07, inflated it). The per-cell slope between sizes extrapolates to 100k.
Baseline, same run: a fresh process that imports the same libraries and reads the input back with
anndata but fits nothing; printed: fit peak / baseline peak.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def prepare(n_cells: int, n_genes: int, path: str) -> None:
    """Write the input h5ad (in a process of its own: its peak is not the fit's)."""
    import numpy as np

    from cellfate.simulate.cascade import CascadeSpec, simulate_cascade

    base = simulate_cascade(CascadeSpec(n_cells=1000, n_genes=n_genes, n_steps=200, seed=0))
    rng = np.random.default_rng(0)
    pick = rng.integers(0, base.n_obs, n_cells)
    adata = base[pick].copy()
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    for layer in ("spliced", "unspliced"):
        adata.layers[layer] = rng.poisson(np.asarray(base.layers[layer])[pick]).astype(np.int32)
    adata.X = adata.layers["spliced"].copy()
    del adata.layers["true_velocity"]
    adata.write_h5ad(path)


def fit(path: str, n_genes: int, baseline: bool) -> None:
    """pipeline.fit alone in this process (or, for the baseline, the input read back); prints the peak."""
    import anndata as ad
    import torch

    from cellfate.dynamics import pipeline

    t0 = time.process_time()
    if baseline:
        ad.read_h5ad(path)
    else:
        torch.set_num_threads(1)
        cfg = {"epochs_phase1": 1, "epochs_phase2": 1, "n_top_genes": n_genes, "min_shared_counts": 0}
        workdir = Path(path).parent
        pipeline.fit(path, workdir / "model", workdir / "out.h5ad", cfg)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT peak_mb={peak:.0f} cpu_s={time.process_time() - t0:.1f}", flush=True)


def measure(n_cells: int, n_genes: int) -> dict[str, float]:
    """Prepare, then the baseline and the fit each in a fresh process; their peaks in MB."""
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "in.h5ad")
        steps = {"prepare": ["--prepare", str(n_cells), path], "baseline": ["--fit", path, "--baseline"],
                 "fit": ["--fit", path]}
        for kind, step in steps.items():
            done = subprocess.run([sys.executable, __file__, *step, "--genes", str(n_genes)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{kind} for {n_cells} cells failed:\n{done.stderr[-2000:]}")
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
            if line:
                print(f"{kind:>8} cells={n_cells} genes={n_genes} {line[0]}", flush=True)
                peaks[kind] = float(line[0].split("peak_mb=")[1].split()[0])
    print(f"{n_cells:,} cells: fit peak / baseline peak (input read, no fit) {peaks['fit'] / peaks['baseline']:.2f}x, "
          f"fit adds {peaks['fit'] - peaks['baseline']:.0f} MB", flush=True)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[10000, 20000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--prepare", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--fit", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        return prepare(int(args.prepare[0]), args.genes, args.prepare[1])
    if args.fit:
        return fit(args.fit, args.genes, args.baseline)
    results = [(n, measure(n, args.genes)["fit"]) for n in args.cells]
    if len(results) >= 2:
        (n0, m0), (n1, m1) = results[0], results[-1]
        slope = (m1 - m0) / (n1 - n0)
        print(f"slope {slope * 1000:.1f} MB per 1,000 cells; extrapolated peak at 100k cells: "
              f"{(m1 + slope * (100_000 - n1)) / 1024:.1f} GB (target <= 8 GB)")


if __name__ == "__main__":
    main()
