#!/usr/bin/env python
"""Parity and speed against Geneformer's own model-use code: EmbExtractor and InSilicoPerturber.

usage: .venv/bin/python benchmarks/geneformer_parity_bench.py --geneformer PATH/TO/Geneformer
       [--cells 24] [--genes 300] [--threads 1] [--reference-venv benchmarks/.venv-geneformer]

One checkpoint, one set of cells, both codes:

* a seeded random BertForMaskedLM in Geneformer's V1 layout (``<pad>`` 0, ``<mask>`` 1, no
  special tokens in the cells; 4 layers, hidden 128) saved with ``save_pretrained``, plus the
  token dictionary as our JSON and as Geneformer's pickle;
* cells: seeded random rank-ordered gene rows of distinct lengths (the reference sorts cells by
  length, so distinct lengths map its output rows back to cells), labelled start / goal / alt,
  saved as a Hugging Face dataset (``input_ids``, ``length``, ``cell_type``, ``cell_id``).

Reference side (its own venv, made by ``benchmarks/setup_geneformer_venv.sh``; Geneformer's code
imported from a local checkout of its public repository, Apache-2.0, not copied here):
``EmbExtractor(emb_mode="cell", cell_emb_style="mean_pool")`` at ``emb_layer`` 0 (last layer)
and -1 (the one below), and ``InSilicoPerturber(genes_to_perturb="all", emb_mode="cell",
cell_states_to_model=start/goal/alt, emb_layer=-1)`` for ``delete`` and ``overexpress``, handed
the state embeddings we computed (its ``state_embs_dict``) so both measure shifts against the
same vectors. ``model_version="V2"`` with a dictionary that has no ``<cls>``/``<eos>`` is its V1
path with our files (its ``"V1"`` switch only replaces the dictionary by its packaged default).
Its code hard-codes ``"cuda"`` in a few tensor moves; the child process maps those
to the CPU (a shim around ``torch.tensor``/``Tensor.to`` in this file, its source untouched), and
its package ``__init__`` is replaced by a stub package that only points at the checkout's modules.

Our side: ``cellfate.foundation.embed.Embedder`` (layers -1 and -2) and the batched
``cellfate.foundation.perturb.Perturber`` on the same jobs. Printed: the largest absolute
difference of embeddings and of cosine shifts (target <= 1e-4) and the speed ratio on the
perturbation jobs, CPU-seconds of ours over the reference's ``perturb_data`` calls, both pinned
to ``--threads`` threads (target >= 10x on CPU).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STATES = {"state_key": "cell_type", "start_state": "start", "goal_state": "goal", "alt_states": ["alt"]}
TARGET_ERROR = 1e-4
TARGET_SPEEDUP = 10.0


def _cpu() -> float:
    """CPU time of this process plus the children it reaped (the reference's spawned datasets workers)."""
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


# -- the shared inputs ---------------------------------------------------------------------------
def make_inputs(work: Path, n_cells: int, n_genes: int, seed: int = 0) -> None:
    """The checkpoint (weights + both dictionary formats) and the cells as a save_to_disk dataset."""
    import datasets
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from cellfate.corpus.dictionary import save_token_dictionary

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    tokens = {"<pad>": 0, "<mask>": 1} | {f"ENSMUSG{i:011d}": i + 2 for i in range(n_genes)}
    config = BertConfig(vocab_size=len(tokens), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=2048, hidden_act="relu", pad_token_id=0,
                        hidden_dropout_prob=0.02, attention_probs_dropout_prob=0.02)
    model_dir = work / "model"
    BertForMaskedLM(config).save_pretrained(model_dir)
    save_token_dictionary(tokens, model_dir / "token_dictionary.json")
    with open(work / "token_dictionary.pkl", "wb") as f:
        pickle.dump(tokens, f)
    lengths = rng.choice(np.arange(n_genes // 4, n_genes - 1), size=n_cells, replace=False)  # distinct
    # expression shared within a state: state-specific gene preferences give the states distinct embeddings
    preference = {s: rng.gumbel(size=n_genes) for s in ("start", "goal", "alt")}
    labels = np.array(["start", "goal", "alt"])[np.arange(n_cells) % 3]
    rows = []
    for length, label in zip(lengths, labels):
        score = preference[label] + rng.gumbel(size=n_genes)
        rows.append((np.argsort(-score)[:length] + 2).astype(np.int64).tolist())
    dataset = datasets.Dataset.from_dict({"input_ids": rows, "length": [len(r) for r in rows], "cell_type": list(labels),
                                          "cell_id": [f"cell{i}" for i in range(n_cells)]})
    dataset.save_to_disk(str(work / "cells.dataset"))


# -- ours ----------------------------------------------------------------------------------------
def run_ours(work: Path, threads: int) -> dict:
    import datasets
    import torch

    from cellfate.foundation.embed import Embedder, load_pretrained
    from cellfate.foundation.perturb import GeneMatrix, Perturber, make_jobs, originals, state_embeddings

    torch.set_num_threads(threads)
    cells = datasets.load_from_disk(str(work / "cells.dataset"))
    rows = [np.asarray(r, dtype=np.int64) for r in cells["input_ids"]]
    labels = np.asarray(cells["cell_type"])
    pretrained = load_pretrained(work / "model", device="cpu")
    out: dict = {}
    for layer in (-1, -2):
        out[f"emb_layer{layer}"] = Embedder(pretrained, layer=layer, pooling="mean").embed(rows)
    embedder = Embedder(pretrained, layer=-2, pooling="mean", batch_size=64)  # = the reference's emb_layer -1
    states = state_embeddings(embedder, rows, labels, ["goal", "alt", "start"])
    np.save(work / "states.npy", states.numpy())
    start = np.flatnonzero(labels == "start")
    matrix = GeneMatrix.from_rows([rows[i] for i in start], pretrained.vocab.token_to_id, 2048)
    perturber = Perturber(embedder, batch_size=64)
    every = np.arange(2, pretrained.vocab.vocab_size)
    for kind, rank in (("delete", None), ("overexpress", 0)):
        cpu, wall = _cpu(), time.perf_counter()
        base = perturber.cosines(matrix, originals(matrix), states)
        jobs = make_jobs(matrix, every, rank, expressed_only=True)
        shifts = perturber.cosines(matrix, jobs, states) - base[jobs.cell]
        out[kind] = {"cell": start[jobs.cell], "token": jobs.token, "remove_at": jobs.remove_at, "shifts": shifts,
                     "cpu_seconds": _cpu() - cpu, "seconds": time.perf_counter() - wall}
    return out


# -- the reference (runs in its own venv) -------------------------------------------------------
def _cuda_to_cpu() -> None:
    """Geneformer moves tensors to "cuda" by name in a few places; on a CPU-only torch, send them to the CPU."""
    import torch

    def fix(value):
        return "cpu" if isinstance(value, str) and value.startswith("cuda") else value

    tensor, to = torch.tensor, torch.Tensor.to
    torch.tensor = lambda *a, device=None, **k: tensor(*a, device=fix(device), **k)
    torch.Tensor.to = lambda self, *a, **k: to(self, *(fix(x) for x in a), **{key: fix(v) for key, v in k.items()})


STUB = """# written by cellfate's benchmarks/geneformer_parity_bench.py: Geneformer's package __init__
# imports every module (ray, optuna, ...); this stub only points the package at the checkout.
from pathlib import Path
__path__.append({source!r})
for _name in ("GENE_MEDIAN_FILE", "TOKEN_DICTIONARY_FILE", "ENSEMBL_DICTIONARY_FILE", "ENSEMBL_MAPPING_FILE"):
    globals()[_name] = globals()[_name + "_30M"] = Path({source!r}) / (_name.lower() + ".pkl")  # unused: calls pass files
"""


def write_stub(work: Path, checkout: str) -> Path:
    """A stub ``geneformer`` package on disk (spawned workers of the reference import it too)."""
    package = work / "geneformer_stub" / "geneformer"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(STUB.format(source=str(Path(checkout).resolve() / "geneformer")))
    return package.parent


def reference_child(work: str, checkout: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _cuda_to_cpu()
    import importlib

    emb_module = importlib.import_module("geneformer.emb_extractor")
    isp_module = importlib.import_module("geneformer.in_silico_perturber")
    work_path = Path(work)
    result: dict = {}
    for emb_layer in (0, -1):
        extractor = emb_module.EmbExtractor(model_type="Pretrained", num_classes=0, emb_mode="cell", cell_emb_style="mean_pool",
                                            max_ncells=None, emb_layer=emb_layer, emb_label=["cell_id"], forward_batch_size=64,
                                            nproc=1, model_version="V2", token_dictionary_file=f"{work}/token_dictionary.pkl")
        frame = extractor.extract_embs(f"{work}/model", f"{work}/cells.dataset", f"{work}/reference", f"emb{emb_layer}")
        frame.to_csv(work_path / f"reference/emb{emb_layer}.tsv", sep="\t")
    states = np.load(work_path / "states.npy")
    state_embs = {name: torch.from_numpy(states[i]) for i, name in enumerate(["goal", "alt", "start"])}
    for kind in ("delete", "overexpress"):
        perturber = isp_module.InSilicoPerturber(perturb_type=kind, genes_to_perturb="all", model_type="Pretrained",
                                                 num_classes=0, emb_mode="cell", cell_emb_style="mean_pool",
                                                 cell_states_to_model=STATES, state_embs_dict=state_embs, max_ncells=None,
                                                 emb_layer=-1, forward_batch_size=64, nproc=1, model_version="V2",
                                                 token_dictionary_file=f"{work}/token_dictionary.pkl")
        cpu, wall = _cpu(), time.perf_counter()
        perturber.perturb_data(f"{work}/model", f"{work}/cells.dataset", f"{work}/reference", kind)
        result[kind] = {"cpu_seconds": _cpu() - cpu, "seconds": time.perf_counter() - wall}
    print("RESULT " + json.dumps(result), flush=True)


def run_reference(work: Path, checkout: str, threads: int, python: str) -> dict:
    (work / "reference").mkdir(exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(write_stub(work, checkout)), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([python, __file__, "_reference", str(work), checkout, str(threads)], capture_output=True,
                          text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"the reference failed:\n{proc.stderr[-4000:]}")
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


# -- comparison ----------------------------------------------------------------------------------
def reference_shifts(work: Path, kind: str, lengths: np.ndarray, start: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """(cell, token) -> shifts towards goal, alt, start, from the reference's per-cell pickles.

    The reference numbers its start cells longest first (``h``); lengths are distinct, so ``h``
    names a cell. Each cell may be split over several pickles (``..._{h}batch{b}_raw.pickle``).
    """
    by_length = sorted(start, key=lambda c: -lengths[c])
    out: dict[tuple[int, int], list] = {}
    for path in glob.glob(str(work / f"reference/in_silico_{kind}_{kind}_dict_cell_embs_*batch*_raw.pickle")):
        h = int(Path(path).name.split("_dict_cell_embs_")[1].split("batch")[0])
        with open(path, "rb") as f:
            table = pickle.load(f)
        for state_index, state in enumerate(["goal", "alt", "start"]):
            for token, values in table.get(state, {}).items():
                if isinstance(token, tuple):
                    token = token[0]
                for value in values if isinstance(values, list) else [values]:
                    entry = out.setdefault((int(by_length[h]), int(token)), [None, None, None])
                    entry[state_index] = float(value)
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def compare(work: Path, ours: dict, lengths: np.ndarray, labels: np.ndarray) -> dict:
    import pandas as pd

    report: dict = {}
    for emb_layer, our_layer in ((0, -1), (-1, -2)):
        frame = pd.read_csv(work / f"reference/emb{emb_layer}.tsv", sep="\t", index_col=0)
        cells = frame["cell_id"].str.replace("cell", "").astype(int).to_numpy()
        theirs = frame.drop(columns=["cell_id"]).to_numpy(dtype=np.float64)
        mine = ours[f"emb_layer{our_layer}"][cells].astype(np.float64)
        report[f"embedding emb_layer {emb_layer} (ours {our_layer})"] = (len(cells), float(np.abs(mine - theirs).max()))
    start = np.flatnonzero(labels == "start")
    for kind in ("delete", "overexpress"):
        table = reference_shifts(work, kind, lengths, start)
        mine = ours[kind]
        keep = ~((kind == "overexpress") & (mine["remove_at"] == 0))  # the reference skips the gene already first
        worst, matched = 0.0, 0
        for c, t, s in zip(mine["cell"][keep], mine["token"][keep], mine["shifts"][keep]):
            ref = table.get((int(c), int(t)))
            if ref is None:
                continue
            matched += 1
            worst = max(worst, float(np.abs(ref - s).max()))
        report[f"{kind} shifts"] = (matched, worst, int(keep.sum()), len(table))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--geneformer", required=True, help="a local checkout of Geneformer's repository")
    parser.add_argument("--reference-venv", type=Path, default=REPO / "benchmarks/.venv-geneformer")
    parser.add_argument("--cells", type=int, default=24)
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks/results/geneformer_parity")
    args = parser.parse_args()
    for path, what in ((Path(args.geneformer) / "geneformer/in_silico_perturber.py", "--geneformer: a checkout of its repository"),
                       (args.reference_venv / "bin/python", "run benchmarks/setup_geneformer_venv.sh")):
        if not path.exists():
            raise SystemExit(f"{path} not found ({what})")
    args.workdir.mkdir(parents=True, exist_ok=True)
    import datasets

    make_inputs(args.workdir, args.cells, args.genes)
    cells = datasets.load_from_disk(str(args.workdir / "cells.dataset"))
    lengths, labels = np.asarray(cells["length"]), np.asarray(cells["cell_type"])
    ours = run_ours(args.workdir, args.threads)
    reference = run_reference(args.workdir, args.geneformer, args.threads, str(args.reference_venv / "bin/python"))
    report = compare(args.workdir, ours, lengths, labels)
    print(f"{args.cells} cells ({(labels == 'start').sum()} start), {args.genes} genes, 4 layers x 128; "
          f"{args.threads} thread(s) each; load average {os.getloadavg()[0]:.1f}")
    ok = True
    for name, values in report.items():
        if name.startswith("embedding"):
            print(f"{name}: {values[0]} cells, max |ours - reference| = {values[1]:.2e}")
            ok &= values[1] <= TARGET_ERROR
        else:
            print(f"{name}: {values[0]:,} (cell, gene) matched of ours {values[2]:,} / reference {values[3]:,}; "
                  f"max |ours - reference| over goal/alt/start = {values[1]:.2e}")
            ok &= values[1] <= TARGET_ERROR and values[0] == values[2] == values[3]
    for kind in ("delete", "overexpress"):
        r, o = reference[kind], ours[kind]
        print(f"{kind}: reference {r['cpu_seconds']:.1f} CPU-s ({r['seconds']:.1f} s wall), ours {o['cpu_seconds']:.2f} CPU-s "
              f"({o['seconds']:.2f} s) for {len(o['shifts']):,} perturbations: {r['cpu_seconds'] / o['cpu_seconds']:.1f}x "
              f"per CPU-second, {r['seconds'] / o['seconds']:.1f}x wall")
    total = sum(reference[k]["cpu_seconds"] for k in reference) / sum(ours[k]["cpu_seconds"] for k in reference)
    print(f"parity within {TARGET_ERROR:g}: {'holds' if ok else 'FAILS'}; speed, both modes: {total:.1f}x per CPU-second "
          f"(target >= {TARGET_SPEEDUP:.0f}x: {'met' if total >= TARGET_SPEEDUP else 'NOT met'})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_reference":
        reference_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
