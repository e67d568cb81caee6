"""Does the demo's tiny model learn, and why did it not before? Corpus x token cut x steps x seeds.

For each setting: simulate the demo's four samples (calibrated corpus, or the old one: 5% of genes
changed by N(0, 1) log folds), rank-value tokenize (v2, cut to --tokens), pretrain the tiny model
with the demo's optimiser settings, and print the held-out loss, the unigram baseline, the gap,
and the zero-shot kNN (k = 10, cosine, 5-fold) of the trained and of an untrained model.

    PYTHONPATH=src .venv/bin/python benchmarks/pretrain_learning.py --corpus new old --tokens 64 \
        --steps 80 400 --seeds 0 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellfate.foundation.learning import learning_table
from cellfate.foundation.train import TrainSettings, train
from cellfate.simulate import calibration
from cellfate.simulate.corpus import corpus_model, simulate_sample

TISSUES = {"liver": ["hepatocyte", "endothelial cell", "macrophage", "T cell"],
           "lung": ["epithelial cell", "endothelial cell", "fibroblast", "macrophage", "B cell"],
           "spleen": ["T cell", "B cell", "macrophage", "endothelial cell"]}
SAMPLES = [("panglaodb", "P1", "liver", 500), ("panglaodb", "P2", "spleen", 400),
           ("expression_atlas", "E1", "lung", 500), ("cellxgene", "C1", "spleen", 400)]


def _old_folds(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 1.0, n) * (rng.random(n) < 0.05) / np.log(2)


def corpus(kind: str, seed: int) -> list:
    """The demo's four samples (QC-clean cells), from the calibrated or the old expression model."""
    saved = calibration.draw_log2_fold_changes
    if kind == "old":
        calibration.draw_log2_fold_changes = _old_folds
    try:
        model = corpus_model(sorted({t for v in TISSUES.values() for t in v}), 2000, seed)
    finally:
        calibration.draw_log2_fold_changes = saved
    out = []
    for source, name, tissue, n in SAMPLES:
        a = simulate_sample(model, name, TISSUES[tissue], n, seed, source=source if kind == "new" else None)
        out.append(a[(a.obs["sim_quality"] == "ok").to_numpy()].copy())
    return out


def tokenize(samples: list, root: Path, max_length: int) -> tuple[str, list[str]]:
    """Rank-value encoding (count / total / gene median, ties by token), v2, cut to ``max_length``."""
    import datasets

    X = sp.vstack([sp.csr_matrix(a.X, dtype=float) for a in samples]).tocsr()
    norm = sp.diags(1e4 / np.asarray(X.sum(1)).ravel()) @ X
    csc = norm.tocsc()
    med = np.array([np.median(csc.data[csc.indptr[j]:csc.indptr[j + 1]]) if csc.indptr[j + 1] > csc.indptr[j]
                    else np.nan for j in range(X.shape[1])])
    genes = samples[0].var_names
    vocab = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    vocab |= {g: i + 4 for i, g in enumerate(sorted(genes[np.isfinite(med)]))}
    (root / "dict.json").write_text(json.dumps(vocab))
    token = np.array([vocab.get(g, -1) for g in genes])
    shards, start = [], 0
    for a, (source, name, _, _) in zip(samples, SAMPLES):
        rows = []
        for i in range(start, start + a.n_obs):
            lo, hi = norm.indptr[i], norm.indptr[i + 1]
            cols, vals = norm.indices[lo:hi], norm.data[lo:hi] / med[norm.indices[lo:hi]]
            order = np.lexsort((token[cols], -vals))
            rows.append([2, *token[cols][order][: max_length - 2].tolist(), 3])
        start += a.n_obs
        path = root / source / name
        datasets.Dataset.from_dict({"input_ids": rows, "length": [len(r) for r in rows],
                                    "cell_type": a.obs["cell_type"].astype(str).tolist()}).save_to_disk(str(path))
        np.save(f"{path}.lengths.npy", np.array([len(r) for r in rows]))
        shards.append(str(path))
    return str(root / "dict.json"), shards


def run(kind: str, tokens: int, steps: int, seed: int, model: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dictionary, shards = tokenize(corpus(kind, seed), root, tokens)
        settings = TrainSettings(
            token_dictionary=dictionary, model_config=model, shards=shards, output_model=str(root / "m"),
            checkpoint_dir=str(root / "ck"), history=str(root / "h.tsv"), heldout=str(root / "ho.tsv"),
            max_steps=steps, batch_size=16 if tokens <= 64 else 8, lr=5e-3, warmup_steps=max(8, steps // 13),
            heldout_fraction=0.05, eval_every=steps, checkpoint_every=10**6, log_every=10**6,
            megabatch_batches=10, num_workers=0, device="cpu", seed=seed,
        )
        start = time.perf_counter()
        train(settings)
        seconds = time.perf_counter() - start
        row = learning_table(settings.output_model, shards, settings.heldout, heldout_fraction=0.05,
                             heldout_max_cells=settings.heldout_max_cells, seed=seed).iloc[-1]
    return {"corpus": kind, "tokens": tokens, "steps": steps, "seed": seed, "train_s": round(seconds, 1),
            "heldout": row["heldout_mlm_loss"], "unigram": row["unigram_cross_entropy"],
            "below_unigram": row["nats_below_unigram"], "knn": row["knn_accuracy"],
            "knn_untrained": row["knn_accuracy_untrained"], "majority": row["knn_majority_share"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", nargs="+", default=["new", "old"], choices=["new", "old"])
    parser.add_argument("--tokens", nargs="+", type=int, default=[64, 4096])
    parser.add_argument("--steps", nargs="+", type=int, default=[80, 400])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--model", default="config/models/tiny.yaml")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [run(*combo, args.model) for combo in itertools.product(args.corpus, args.tokens, args.steps, args.seeds)]
    pd.set_option("display.width", 200)
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
