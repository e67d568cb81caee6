"""Is the demo's negative result the vocabulary? A tiny model pretrained from scratch (the demo's
settings, STEPS steps) on the demo corpus PLUS the bifurcation's cells (mapped tokens, 3 copies),
then the fluctuation -> perturbation screen with it, seeds 0-2. Writes under /tmp/fp_feas.

Run after the demo: ``PYTHONPATH=src .venv/bin/python benchmarks/fluctuation_perturbation_corpus_check.py 800``
"""
import argparse

_parser = argparse.ArgumentParser(description="Pretrain the tiny demo model on the demo corpus plus the "
                                  "bifurcation's cells, then run the fluctuation -> perturbation screen with it.")
_parser.add_argument("steps", nargs="?", type=int, default=800, help="pretraining steps (default 800)")
ARGS = _parser.parse_args()

import sys, json, numpy as np, pandas as pd, anndata as ad, torch, datasets, logging
from pathlib import Path
torch.set_num_threads(2)
from cellfate.foundation import fate_screen as fs
from cellfate.foundation.embed import load_pretrained
from cellfate.corpus.tokenizer import RankValueTokenizer
from cellfate.corpus.dictionary import load_gene_medians
from cellfate.foundation.train import TrainSettings, train
r = Path("results"); out = Path("/tmp/fp_feas")
out.mkdir(parents=True, exist_ok=True)
steps = ARGS.steps
adata = ad.read_h5ad(r / "dynamics/bifurcation.h5ad")
pre = load_pretrained(str(r / "pretrain/model"), "cpu")
tok = RankValueTokenizer(pre.vocab.token_to_id, load_gene_medians(str(r / "tokenize/gene_medians.tsv")), "v2", 64)
mapping = fs.vocabulary_mapping(list(adata.var_names), sorted(tok.gene_token), 0)
rows = fs.tokenize_counts(adata.layers["spliced"], mapping["model_gene_id"].tolist(), tok)
rows = rows * 3
shard = out / "bif_shard"
data = {"input_ids": [x.tolist() for x in rows], "length": [len(x) for x in rows]}
for c in ("cell_type", "source", "sample", "tissue"):
    data[c] = ["x"] * len(rows)
datasets.Dataset.from_dict(data).save_to_disk(str(shard))
np.save(str(shard) + ".lengths.npy", np.array([len(x) for x in rows], dtype=np.int32))
shards = sorted(str(p) for p in (r / "tokenize/shards").glob("*/*") if p.is_dir()) + [str(shard)]
model = out / f"model{steps}"
s = TrainSettings(token_dictionary=str(r / "tokenize/token_dictionary.json"), model_config="config/models/tiny.yaml",
    shards=shards, output_model=str(model), checkpoint_dir=str(out / f"ckpt{steps}"), history=str(out / "h.tsv"),
    heldout=str(out / "ho.tsv"), max_steps=steps, batch_size=16, lr=0.005, warmup_steps=60, heldout_fraction=0.1,
    eval_every=10000, checkpoint_every=10000, log_every=100, megabatch_batches=10, num_workers=0, device="cpu")
train(s)
import shutil; shutil.copy(r / "pretrain/model/token_dictionary.json", model / "token_dictionary.json") if not (model / "token_dictionary.json").exists() else None
for seed in (0, 1, 2):
    t = fs.run(str(r / "dynamics/bifurcation.h5ad"), str(r / "dynamics/bifurcation/fluctuation_genes.tsv"), str(model),
               str(r / "tokenize/gene_medians.tsv"), str(out / f"t{steps}_{seed}.tsv"),
               spec={"fate_key": "branch", "fates": ["alpha", "beta"], "seed": seed},
               settings={"device": "cpu", "max_tokens": 64, "pooling": "mean"},
               truth_h5ad=str(r / "simulated/bifurcation/truth.h5ad"))
    g = t[t.group != "control"].groupby(["fate", "group"]).agg(sig=("significant", "sum"), n=("significant", "size"), maxfdr=("fdr", "max"), medshift=("mean_shift", "median"))
    print("seed", seed, "control median", t[t.group == "control"].groupby("fate")["mean_shift"].median().round(5).to_dict()); print(g.to_string(), flush=True)
