"""Peak memory of the whole ``vicdyf_fit`` (pipeline.fit: read, select genes, train, annotate, write) by cell count.

    .venv/bin/python benchmarks/vicdyf_memory_bench.py --cells 10000 20000 --genes 2000

Data the project's bifurcation simulator did not make: one run of the regulatory cascade
(cellfate.simulate.cascade, 1,000 cells) whose cells are resampled (Poisson around each
drawn cell's counts) up to each size. Training is 1 + 1 epochs (memory does not grow with epochs;
the outputs and the embedding are computed in full). Each size's input is written by one process
and fitted by a fresh one, whose ru_maxrss is the peak (the data preparation, in the same process
before 2026-12-07, inflated it). The per-cell slope between sizes extrapolates to 100k.
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


def fit(path: str, n_genes: int) -> None:
    """pipeline.fit alone in this process; prints its peak resident set."""
    from cellfate.dynamics import pipeline

    cfg = {"epochs_phase1": 1, "epochs_phase2": 1, "n_top_genes": n_genes, "min_shared_counts": 0}
    workdir = Path(path).parent
    t0 = time.process_time()
    pipeline.fit(path, workdir / "model", workdir / "out.h5ad", cfg, threads=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT peak_mb={peak:.0f} cpu_s={time.process_time() - t0:.1f}", flush=True)


def measure(n_cells: int, n_genes: int) -> float:
    """Prepare, then fit in a fresh process; the fit's peak in MB."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "in.h5ad")
        steps = [["--prepare", str(n_cells), path], ["--fit", path]]
        for step in steps:
            done = subprocess.run([sys.executable, __file__, *step, "--genes", str(n_genes)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{step[0]} for {n_cells} cells failed:\n{done.stderr[-2000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][0]
    print(f"cells={n_cells} genes={n_genes} {line}", flush=True)
    return float(line.split("peak_mb=")[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[10000, 20000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--prepare", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--fit", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        return prepare(int(args.prepare[0]), args.genes, args.prepare[1])
    if args.fit:
        return fit(args.fit, args.genes)
    results = [(n, measure(n, args.genes)) for n in args.cells]
    if len(results) >= 2:
        (n0, m0), (n1, m1) = results[0], results[-1]
        slope = (m1 - m0) / (n1 - n0)
        print(f"slope {slope * 1000:.1f} MB per 1,000 cells; extrapolated peak at 100k cells: "
              f"{(m1 + slope * (100_000 - n1)) / 1024:.1f} GB (target <= 8 GB)")


if __name__ == "__main__":
    main()
