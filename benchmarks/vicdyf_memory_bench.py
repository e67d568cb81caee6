"""Peak memory of the whole ``vicdyf_fit`` (pipeline.fit: read, select genes, train, annotate, write) by cell count.

    .venv/bin/python benchmarks/vicdyf_memory_bench.py --cells 10000 20000 --genes 2000

Data the project's bifurcation simulator did not make: one run of the regulatory cascade
(cellfate.simulate.cascade, 1,000 cells) whose cells are resampled (Poisson around each
drawn cell's counts) up to each size. Training is 1 + 1 epochs (memory does not grow with epochs;
the outputs and the embedding are computed in full). Each size runs in its own process; the peak
resident set is that process's ru_maxrss. The per-cell slope between sizes extrapolates to 100k.
Baseline, same run: a process that makes the same data and reads the input back with anndata but
fits nothing (the simulation's own peak and the libraries); printed: fit peak / baseline peak.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(n_cells: int, n_genes: int, workdir: str, baseline: bool = False) -> None:
    import numpy as np
    import torch

    from cellfate.dynamics import pipeline
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
    path = Path(workdir) / "in.h5ad"
    adata.write_h5ad(path)
    del adata, base
    if baseline:  # the same libraries imported and the input read back, nothing fitted
        import anndata as ad

        t0 = time.process_time()
        held = ad.read_h5ad(path)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"RESULT cells={held.n_obs} genes={n_genes} peak_mb={peak:.0f} cpu_s={time.process_time() - t0:.1f}")
        return
    cfg = {"epochs_phase1": 1, "epochs_phase2": 1, "n_top_genes": n_genes, "min_shared_counts": 0}
    t0 = time.process_time()
    torch.set_num_threads(1)
    pipeline.fit(path, Path(workdir) / "model", Path(workdir) / "out.h5ad", cfg)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT cells={n_cells} genes={n_genes} peak_mb={peak:.0f} cpu_s={time.process_time() - t0:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[10000, 20000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        with tempfile.TemporaryDirectory() as tmp:
            worker(args.worker, args.genes, tmp, baseline=args.baseline_worker)
        return
    results = []
    for n in args.cells:
        peaks = {}
        for kind in ("baseline", "fit"):
            extra = ["--baseline-worker"] if kind == "baseline" else []
            done = subprocess.run([sys.executable, __file__, "--worker", str(n), "--genes", str(args.genes), *extra],
                                  capture_output=True, text=True)
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
            if done.returncode != 0 or not line:
                raise SystemExit(f"{kind} worker for {n} cells failed:\n{done.stderr[-2000:]}")
            print(f"{kind:>8} {line[0]}", flush=True)
            peaks[kind] = float(line[0].split("peak_mb=")[1].split()[0])
        ratio, added = peaks["fit"] / peaks["baseline"], peaks["fit"] - peaks["baseline"]
        print(f"{n:,} cells: fit peak / baseline peak (same process set-up, input read, no fit) "
              f"{ratio:.2f}x, fit adds {added:.0f} MB", flush=True)
        results.append((n, peaks["fit"]))
    if len(results) >= 2:
        (n0, m0), (n1, m1) = results[0], results[-1]
        slope = (m1 - m0) / (n1 - n0)
        print(f"slope {slope * 1000:.1f} MB per 1,000 cells; extrapolated peak at 100k cells: "
              f"{(m1 + slope * (100_000 - n1)) / 1024:.1f} GB (target <= 8 GB)")


if __name__ == "__main__":
    main()
