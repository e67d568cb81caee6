"""cellfate's VICDYF beside the original ``vicdyf==0.0.8``: same simulated data, same epochs.

Setup once: ``benchmarks/setup_vicdyf_venv.sh`` (the original needs numpy<2 and zarr<3, so it
lives in ``benchmarks/.venv-vicdyf``). Then, from the repository root with the project's venv::

    .venv/bin/python benchmarks/vicdyf_bench.py --cells 3000 --genes 1000 --epochs 500 --seeds 0 1 2

For each seed the driver simulates a bifurcation (cellfate.simulate.bifurcation), hands the same
counts to two worker processes (ours in this venv, the original in its own, data passed as .npz)
and compares:

- fit time: wall and CPU seconds (user + system, worker processes included) of the whole
  estimate: both phases of training plus the outputs (posterior samples, UMAP, arrows), after
  both sides have imported their entry module;
- peak memory: the worker's peak resident set (its data-loader processes included);
- velocity: mean per-cell cosine between the estimated mean velocity (times the gene factor of N,
  i.e. in counts) and the simulator's true ds/dt;
- fluctuation at the branch: mean fluctuation of cells just past the branch point (pseudotime in
  [branch, branch + 0.2]) over that of the others.

Both use all genes, batch 100, lr 1e-3, 5% held out, torch on ``--threads`` threads; ours runs
without early stopping so that the epochs are the same. Results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ORIGINAL_PYTHON = HERE / ".venv-vicdyf" / "bin" / "python"


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _anndata(data: dict[str, np.ndarray]):
    import anndata as ad

    a = ad.AnnData(X=data["spliced"].astype(np.float32))
    a.layers["spliced"] = data["spliced"]
    a.layers["unspliced"] = data["unspliced"]
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.var_names = [str(g) for g in data["genes"]]
    return a


def work(kind: str, data_path: str, out_path: str, epochs: int, threads: int, seed: int) -> None:
    """Worker: fit one implementation and save mean velocity, fluctuation, timings, memory."""
    import torch

    torch.set_num_threads(threads)
    data = dict(np.load(data_path, allow_pickle=True))
    adata = _anndata(data)
    # the entry modules load before the clock starts, for both: importing vicdyf.workflow (scanpy
    # with it) took ~2.3 s, which is library loading, not estimation; what a call loads lazily
    # (umap-learn for the original, the layout's scipy parts for ours) still counts
    if kind == "original":
        import vicdyf.workflow
    else:
        from cellfate.dynamics.model import VICDYF
        from cellfate.dynamics.train import TrainingPlan
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    if kind == "original":
        torch.manual_seed(seed)
        np.random.seed(seed)
        adata = vicdyf.workflow.estimate_dynamics(adata, first_epoch=epochs, second_epoch=epochs,
                                                  param_path=str(Path(out_path).with_suffix(".pt")))
    else:
        model = VICDYF(adata)
        model.train(TrainingPlan(epochs_phase1=epochs, epochs_phase2=epochs, seed=seed, progress=False, patience=0))
        model.annotate(adata, n_samples=10, seed=seed)
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    np.savez(out_path, mean_velocity=np.asarray(adata.layers["vicdyf_mean_velocity"]),
             fluctuation=np.asarray(adata.obs["vicdyf_fluctuation"]), wall=wall, cpu=cpu, peak_mb=_peak_rss_mb())


def simulate(n_cells: int, n_genes: int, seed: int, path: Path, kind: str = "bifurcation") -> dict[str, np.ndarray]:
    """One simulator run (cellfate.dynamics.crosscheck.simulate: bifurcation, markovmodus, cascade...) as arrays."""
    from cellfate.dynamics.crosscheck import simulate as simulate_kind

    adata = simulate_kind(kind, n_cells, n_genes, seed)
    data = {"spliced": np.asarray(adata.layers["spliced"]), "unspliced": np.asarray(adata.layers["unspliced"]),
            "true_velocity": np.asarray(adata.layers["true_velocity"]), "pseudotime": adata.obs["pseudotime"].to_numpy(),
            "branch_time": np.float64(adata.uns["simulation"]["branch_time"]), "genes": np.asarray(adata.var_names)}
    keep = data["spliced"].sum(0) > 0
    data = {k: (v[:, keep] if k in ("spliced", "unspliced", "true_velocity") else v[keep] if k == "genes" else v)
            for k, v in data.items()}
    np.savez(path, **data)
    return data


def quality(result: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> dict[str, float]:
    from cellfate.dynamics.validation import velocity_cosine

    s = data["spliced"].astype(float)
    gene_factor = s.sum(0) / s.sum()
    cos = velocity_cosine(result["mean_velocity"] * gene_factor[None, :], data["true_velocity"])
    pt, tb = data["pseudotime"], float(data["branch_time"])
    near = (pt >= tb) & (pt <= tb + 0.2)
    fl = result["fluctuation"]
    return {"velocity_cosine": float(np.nanmean(cos)), "fluctuation_branch_ratio": float(fl[near].mean() / fl[~near].mean())}


def run_worker(python: str, kind: str, data: Path, out: Path, args: argparse.Namespace, seed: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"), OMP_NUM_THREADS=str(args.threads))
    command = [python, __file__, "--worker", kind, "--data", str(data), "--result", str(out),
               "--epochs", str(args.epochs), "--threads", str(args.threads), "--seeds", str(seed)]
    print(f"[{kind} seed {seed}] {' '.join(command)}", flush=True)
    log = out.with_suffix(".log")
    with open(log, "w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=out.parent)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed (exit {done.returncode}); see {log}")
    return dict(np.load(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=500, help="epochs per phase, for both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--simulator", default="bifurcation",
                        help="bifurcation (the project's own), markovmodus or cascade (data it was not designed on)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--worker", choices=["ours", "original"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work(args.worker, args.data, args.result, args.epochs, args.threads, args.seeds[0])
        return
    if not ORIGINAL_PYTHON.exists():
        raise SystemExit(f"{ORIGINAL_PYTHON} is missing: run benchmarks/setup_vicdyf_venv.sh first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        data_path = out / f"{args.simulator}_{args.cells}x{args.genes}_seed{seed}.npz"
        data = simulate(args.cells, args.genes, seed, data_path, args.simulator)
        for kind, python in (("ours", sys.executable), ("original", str(ORIGINAL_PYTHON))):
            result = run_worker(python, kind, data_path, out / f"{kind}_seed{seed}.npz", args, seed)
            row = {"impl": kind, "seed": seed, "wall_s": float(result["wall"]), "cpu_s": float(result["cpu"]),
                   "peak_mb": float(result["peak_mb"]), **quality(result, data)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    import pandas as pd

    table = pd.DataFrame(rows)
    name = f"vicdyf_bench_{args.simulator}_{args.cells}x{args.genes}_e{args.epochs}"
    table.to_csv(out / f"{name}.tsv", sep="\t", index=False)
    mean = table.groupby("impl")[["wall_s", "cpu_s", "peak_mb", "velocity_cosine", "fluctuation_branch_ratio"]].mean()
    print(f"\n{args.cells} cells x {args.genes} genes, {args.epochs} + {args.epochs} epochs, seeds {args.seeds}, "
          f"{args.threads} torch thread(s)")
    print(table.to_string(index=False))
    print("\nmeans over seeds:\n" + mean.to_string())
    o, r = mean.loc["ours"], mean.loc["original"]
    print(f"\nspeed-up (original / ours): wall {r.wall_s / o.wall_s:.1f}x, CPU {r.cpu_s / o.cpu_s:.1f}x (target >= 5x)")
    print(f"peak memory (original / ours): {r.peak_mb / o.peak_mb:.1f}x")
    print(f"velocity cosine: ours {o.velocity_cosine:.3f} vs original {r.velocity_cosine:.3f} "
          f"(ratio {o.velocity_cosine / r.velocity_cosine:.2f})")
    print(f"fluctuation at branch: ours {o.fluctuation_branch_ratio:.2f} vs original {r.fluctuation_branch_ratio:.2f} "
          f"(ratio {o.fluctuation_branch_ratio / r.fluctuation_branch_ratio:.2f})")


if __name__ == "__main__":
    main()
