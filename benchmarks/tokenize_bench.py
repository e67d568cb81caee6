#!/usr/bin/env python
"""Tokenization per CPU-second and peak memory against the reference Geneformer tokenizer, same run.

usage: .venv/bin/python benchmarks/tokenize_bench.py --geneformer PATH/TO/Geneformer [--sizes 5000 20000]
       [--threads 2] [--reference-venv benchmarks/.venv-geneformer] [--fixture ../shared/fixtures/geneformer_reference]

The reference: ``TranscriptomeTokenizer`` from a local checkout of Geneformer's public repository
(Apache-2.0; not on PyPI, not copied here), run unmodified in its own venv (made by
``benchmarks/setup_geneformer_venv.sh``) on the same file, dictionary and medians, with the
fixture's V1 call (2,048 genes, no special tokens, ``nproc=1``). Its package ``__init__`` (which
imports every module: ray, optuna...) is replaced by a stub that only defines the default
dictionary paths, as when the fixture was made.

Data: the fixture's seeded ``gen_synth.py`` (N cells x 20,000 genes, ~2,800 detected genes per
cell) and its token dictionary; an uncompressed h5ad written block by block. Gene medians come
from our exact two-pass median jobs over the smallest file (timed apart) and are handed to both
tokenizers as one pickle, so both divide by the same floats.

Each pass runs in a fresh process; cells/s and cells/CPU-s count *output* cells (rows written,
the same for both: checked), from opening the input to the dataset on disk; imports are start-up
and not timed. Ratios: ours over the reference, wall and per CPU-second (ours uses ``--threads``
threads, the reference one process). Parity: every output row holds the same sequence of values
(tie-insensitive: the reference's unstable argsort orders equal values arbitrarily; ours breaks
ties by token id). Targets (#20): >= 10x the reference per CPU-second, peak RSS flat in N.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET_CPU_RATIO = 10.0
TARGET_RSS_GB = 2.0


# -- data ------------------------------------------------------------------------------------------
def _gen_synth(fixture: Path):
    spec = importlib.util.spec_from_file_location("gen_synth", fixture / "gen_synth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(n_cells: int, fixture: Path, out: Path) -> None:
    """gen_synth's cells, streamed block by block into an uncompressed, contiguous h5ad."""
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    gs = _gen_synth(fixture)
    gene_ids, p, r, *_ = gs.gene_params()
    staging = out.with_suffix(".staging.h5")
    blocks = -(-n_cells // gs.BLOCK)
    types, passes, totals, indptr, nnz = [], [], [], [np.zeros(1, np.int64)], 0
    with h5py.File(staging, "w") as f:
        data = f.create_dataset("data", (0,), maxshape=(None,), dtype="float32", chunks=(1 << 20,))
        indices = f.create_dataset("indices", (0,), maxshape=(None,), dtype="int32", chunks=(1 << 20,))
        for b in range(blocks):
            m = min(gs.BLOCK, n_cells - b * gs.BLOCK)
            x, cell_type, filter_pass = gs.gen_block(b, gs.BLOCK, p, r)  # full block: cell i does not depend on N
            x = x[:m]
            x.sort_indices()
            x.eliminate_zeros()
            data.resize((nnz + x.nnz,))
            indices.resize((nnz + x.nnz,))
            data[nnz:] = x.data
            indices[nnz:] = x.indices
            indptr.append(x.indptr[1:].astype(np.int64) + nnz)
            nnz += x.nnz
            types.append(cell_type[:m])
            passes.append(filter_pass[:m])
            totals.append(np.asarray(x.sum(axis=1, dtype=np.float64)).ravel().astype(np.int64))
            if b % 40 == 0:
                print(f"  generating {out.name}: {b * gs.BLOCK:,}/{n_cells:,} cells", flush=True)
    obs = pd.DataFrame(
        {"n_counts": np.concatenate(totals), "filter_pass": np.concatenate(passes),
         "cell_type": pd.Categorical(gs.CELL_TYPES[np.concatenate(types)], categories=list(gs.CELL_TYPES))},
        index=[f"cell_{i:07d}" for i in range(n_cells)],
    )
    partial = out.with_suffix(".partial.h5ad")
    with h5py.File(staging) as src, h5py.File(partial, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        x = f.create_group("X")
        x.attrs["encoding-type"], x.attrs["encoding-version"] = "csr_matrix", "0.1.0"
        x.attrs["shape"] = np.array([n_cells, len(gene_ids)])
        x.create_dataset("indptr", data=np.concatenate(indptr))
        for name in ("data", "indices"):
            target = x.create_dataset(name, shape=src[name].shape, dtype=src[name].dtype)  # contiguous, like anndata
            for start in range(0, src[name].shape[0], 1 << 26):
                target[start : start + (1 << 26)] = src[name][start : start + (1 << 26)]
        write_elem(f, "obs", obs)
        write_elem(f, "var", pd.DataFrame({"ensembl_id": gene_ids}, index=gene_ids))
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
    staging.unlink()
    partial.rename(out)


def write_pickles(fixture: Path, medians_tsv: Path, out: Path) -> None:
    """The token dictionary and our medians as the Geneformer pickles both tokenizers read."""
    import pickle

    import pandas as pd

    table = pd.read_csv(medians_tsv, sep="\t", dtype={"gene_id": str}, float_precision="round_trip")
    gene_medians = {g: float(m) for g, m in zip(table["gene_id"], table["median"])}
    with open(out / "gene_median_dictionary.pkl", "wb") as f:
        pickle.dump(gene_medians, f)
    tokens = {str(k): int(v) for k, v in _gen_synth(fixture).gene_params()[-1].items()}
    with open(out / "token_dictionary.pkl", "wb") as f:  # the reference needs a median for every dictionary gene
        pickle.dump({k: v for k, v in tokens.items() if k in gene_medians or k.startswith("<")}, f)


# -- the measured passes (each in its own process) ---------------------------------------------
def run_ours(h5ad: str, data: str, out: str, threads: int) -> dict:
    from cellfate.corpus.tokenizer import RankValueTokenizer, tokenize_h5ad

    tokenizer = RankValueTokenizer.from_files(f"{data}/token_dictionary.pkl", f"{data}/gene_median_dictionary.pkl")
    stats = tokenize_h5ad(h5ad, tokenizer, out, out + ".lengths.npy", chunk_size=1024, threads=threads,
                          cell_attributes=["cell_type"])
    return {"cells_in": stats["cells_in"], "cells": stats["cells_tokenized"]}


def run_medians(h5ad: str, data: str, out: str, threads: int) -> dict:
    """Our exact medians, both map-reduce passes (sketch, merge, bin values, select) in one process."""
    from cellfate.corpus.medians import two_pass_medians

    table = two_pass_medians([h5ad], out, f"{data}/gene_medians.tsv")
    import h5py

    with h5py.File(h5ad) as f:
        cells = len(f["X/indptr"]) - 1
    return {"cells_in": cells, "cells": cells, "genes": len(table), "distinct_medians": int(table["median"].nunique())}


def _import_reference(checkout: str):
    """Geneformer's tokenizer module from a checkout, its package __init__ replaced by a stub."""
    import importlib
    import types

    package = types.ModuleType("geneformer")
    package.__path__ = [str(Path(checkout) / "geneformer")]
    for name in ("GENE_MEDIAN_FILE", "TOKEN_DICTIONARY_FILE", "ENSEMBL_DICTIONARY_FILE", "ENSEMBL_MAPPING_FILE"):
        setattr(package, name, Path(checkout) / "geneformer" / f"{name.lower()}.pkl")  # unused: every call passes files
    sys.modules["geneformer"] = package
    return importlib.import_module("geneformer.tokenizer")


def run_reference(h5ad: str, data: str, out: str, threads: int, checkout: str) -> dict:
    module = _import_reference(checkout)  # V2 with 2,048 and no special tokens = the V1 call (V1 forces its own files)
    tokenizer = module.TranscriptomeTokenizer(
        custom_attr_name_dict={"cell_type": "cell_type"}, nproc=1, model_input_size=2048, special_token=False,
        model_version="V2", gene_median_file=f"{data}/gene_median_dictionary.pkl",
        token_dictionary_file=f"{data}/token_dictionary.pkl", gene_mapping_file=None, collapse_gene_ids=True)
    return {"tokenizer": tokenizer, "args": (str(Path(h5ad).parent), str(Path(out).parent), Path(out).name, "h5ad")}


PASSES = {"ours": run_ours, "medians": run_medians}


def _peak_rss_gb() -> float:
    """This process's peak RSS (VmHWM: reset at exec, unlike ru_maxrss, which keeps the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _cpu_seconds() -> float:
    """CPU time of this process and of any it waited for (the reference's datasets workers, if any)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _load_kernels(h5ad: str, data: str) -> None:
    """Encode the file's first cells once so numba loads its cached kernels before the clock starts."""
    from cellfate.corpus.reader import open_counts
    from cellfate.corpus.tokenizer import RankValueTokenizer

    tokenizer = RankValueTokenizer.from_files(f"{data}/token_dictionary.pkl", f"{data}/gene_median_dictionary.pkl")
    with open_counts(h5ad) as counts:
        stop = min(2, counts.n_obs)
        tokenizer.encode(tokenizer.vocabulary(counts.gene_ids()), counts.read_rows(0, stop), np.ones(stop, dtype=bool),
                         counts.obs("n_counts", 0, stop).astype(np.float64))


def child(kind: str, h5ad: str, data: str, out: str, threads: int, checkout: str) -> None:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    if kind == "reference":
        job = run_reference(h5ad, data, out, threads, checkout)
        cpu, start = _cpu_seconds(), time.perf_counter()
        job["tokenizer"].tokenize_data(*job["args"])
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        import datasets

        result = {"cells": len(datasets.load_from_disk(out + ".dataset"))}
    else:
        import cellfate.corpus.medians  # noqa: F401 - imports are start-up, not timed
        import cellfate.corpus.tokenizer  # noqa: F401

        if kind == "ours":
            _load_kernels(h5ad, data)
        cpu, start = _cpu_seconds(), time.perf_counter()
        result = PASSES[kind](h5ad, data, out, threads)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    result.update(seconds=seconds, cpu_seconds=cpu, peak_rss_gb=_peak_rss_gb())
    print("RESULT " + json.dumps(result), flush=True)


def measure(kind: str, h5ad: Path, data: Path, out: Path, threads: int, python: str, checkout: str) -> dict:
    started = time.perf_counter()
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if kind == "reference":
        env.pop("PYTHONPATH", None)
    proc = subprocess.run([python, __file__, "_child", kind, str(h5ad), str(data), str(out), str(threads), checkout],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{kind} on {h5ad.name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    result["process_seconds"] = time.perf_counter() - started
    result["cells_per_s"] = result["cells"] / result["seconds"]
    result["cells_per_cpu_s"] = result["cells"] / result["cpu_seconds"]
    result["load_average"] = os.getloadavg()[0]
    return result


def tie_insensitive_equal(ours: Path, reference: Path, h5ad: Path, data: Path) -> tuple[int, int, int]:
    """(rows, rows with the same value sequence, rows token-for-token identical) over the whole output."""
    import datasets
    import h5py

    from cellfate.corpus.dictionary import load_gene_medians, load_token_dictionary

    mine = datasets.load_from_disk(str(ours))["input_ids"]
    theirs = datasets.load_from_disk(str(reference))["input_ids"]
    if len(mine) != len(theirs):
        return max(len(mine), len(theirs)), 0, 0
    tokens = load_token_dictionary(data / "token_dictionary.pkl")
    gene_medians = load_gene_medians(data / "gene_median_dictionary.pkl")
    same = identical = 0
    with h5py.File(h5ad) as f:
        genes = f["var/_index"].asstr()[:]
        col_token = np.array([tokens.get(g, -1) if g in gene_medians else -1 for g in genes])
        inv_median = np.divide(1, np.array([gene_medians.get(g, 1.0) for g in genes]))
        totals, passed, indptr = f["obs/n_counts"][:], f["obs/filter_pass"][:].astype(bool), f["X/indptr"][:]
        row = 0
        for c in np.flatnonzero(passed):
            cols = f["X/indices"][indptr[c] : indptr[c + 1]]
            keep = col_token[cols] >= 0
            if not keep.any():
                continue
            x = f["X/data"][indptr[c] : indptr[c + 1]][keep]
            v = np.multiply(np.multiply(x.astype(np.float64), 1 / totals[c]) * 10000, inv_median[cols[keep]])
            value = dict(zip(col_token[cols[keep]].tolist(), v.tolist()))
            same += [value[t] for t in mine[row]] == [value[t] for t in theirs[row]]
            identical += list(mine[row]) == list(theirs[row])
            row += 1
    return len(mine), same, identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--geneformer", required=True, help="a local checkout of Geneformer's repository")
    parser.add_argument("--reference-venv", type=Path, default=REPO / "benchmarks/.venv-geneformer")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fixture", type=Path, default=Path("/work/shared/fixtures/geneformer_reference"))
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks/results/tokenize")
    args = parser.parse_args()
    if not (args.fixture / "gen_synth.py").exists():
        raise SystemExit(f"{args.fixture}/gen_synth.py not found (--fixture)")
    if not (Path(args.geneformer) / "geneformer/tokenizer.py").exists():
        raise SystemExit(f"{args.geneformer}: no geneformer/tokenizer.py (--geneformer: a checkout of its repository)")
    ref_python = str(args.reference_venv / "bin/python")
    if not Path(ref_python).exists():
        raise SystemExit(f"{ref_python} not found: run benchmarks/setup_geneformer_venv.sh")
    data, out = args.workdir / "data", args.workdir / "out"
    files = {}
    for n in sorted(args.sizes):
        files[n] = data / f"synth_{n}" / f"synth_{n}.h5ad"  # one folder per file: the reference tokenizes folders
        files[n].parent.mkdir(parents=True, exist_ok=True)
        if not files[n].exists():
            make_data(n, args.fixture, files[n])
    out.mkdir(parents=True, exist_ok=True)
    print(f"cpu: {os.cpu_count()} visible, ours pinned to {args.threads}, the reference to 1 process; "
          f"load average {os.getloadavg()[0]:.1f}")
    run = lambda kind, n, target: measure(kind, files[n], data, target, args.threads,  # noqa: E731
                                          ref_python if kind == "reference" else sys.executable, args.geneformer)
    medians = run("medians", min(files), out / "medians")
    write_pickles(args.fixture, data / "gene_medians.tsv", data)
    print(f"exact two-pass medians ({min(files):,} cells): {medians['cells_per_s']:,.0f} cells/s, "
          f"{medians['cells_per_cpu_s']:,.0f} cells/CPU-s, peak RSS {medians['peak_rss_gb']:.2f} GB; "
          f"{medians['genes']:,} genes, {medians['distinct_medians']:,} distinct medians")
    print(f"{'cells':>8} {'pass':>10} {'out cells':>9} {'cells/s':>9} {'cells/CPU-s':>12} {'peak RSS':>9} {'load':>5}")
    results = []
    for n in files:
        row = {kind: run(kind, n, out / f"{kind}_{n}") for kind in ("reference", "ours")}
        for kind, r in row.items():
            print(f"{n:>8,} {kind:>10} {r['cells']:>9,} {r['cells_per_s']:>9,.0f} {r['cells_per_cpu_s']:>12,.0f} "
                  f"{r['peak_rss_gb']:>7.2f}GB {r['load_average']:>5.1f}")
        rows, same, identical = tie_insensitive_equal(out / f"ours_{n}", out / f"reference_{n}.dataset", files[n], data)
        wall = row["ours"]["cells_per_s"] / row["reference"]["cells_per_s"]
        cpu = row["ours"]["cells_per_cpu_s"] / row["reference"]["cells_per_cpu_s"]
        print(f"{n:>8,} ours / reference: {wall:.1f}x wall, {cpu:.1f}x per CPU-second; parity: {same:,}/{rows:,} rows "
              f"with the same value sequence ({identical:,} token for token)")
        results.append({"cells": n, **row, "wall_ratio": wall, "cpu_ratio": cpu, "rows": rows, "tie_insensitive_equal": same,
                        "identical": identical})
    big, small = results[-1], results[0]
    print(f"at {big['cells']:,} cells: {big['cpu_ratio']:.1f}x the reference per CPU-second "
          f"(target >= {TARGET_CPU_RATIO:.0f}x: {'met' if big['cpu_ratio'] >= TARGET_CPU_RATIO else 'NOT met'}), "
          f"{big['wall_ratio']:.1f}x wall; parity {'holds' if all(r['tie_insensitive_equal'] == r['rows'] for r in results) else 'FAILS'}")
    print(f"peak RSS, ours: {small['ours']['peak_rss_gb']:.2f} GB at {small['cells']:,} -> {big['ours']['peak_rss_gb']:.2f} GB at "
          f"{big['cells']:,} cells (reference {small['reference']['peak_rss_gb']:.2f} -> {big['reference']['peak_rss_gb']:.2f} GB); "
          f"flat and < {TARGET_RSS_GB} GB: "
          f"{'met' if big['ours']['peak_rss_gb'] < TARGET_RSS_GB and big['ours']['peak_rss_gb'] < 1.2 * small['ours']['peak_rss_gb'] else 'NOT met'}")
    (args.workdir / "results.json").write_text(json.dumps({"medians": medians, "runs": results}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], *sys.argv[3:6], int(sys.argv[6]), sys.argv[7])
    else:
        main()
