"""The studied tissue in the pretraining corpus, with its genes' own tokens: does the demo's
fluctuation -> perturbation screen then find VICDYF's drivers?

The demo corpus (liver/lung/spleen) lacks 98 of the simulated pancreas' 100 genes, so the screen
gave them surrogate tokens. Here the token dictionary is extended by the missing genes (new ids
after the demo's), their medians come from endocrine-pancreas cells, and the tiny demo model is
pretrained (the demo's settings) on the demo's four shards plus N_CELLS *fresh* cells of the same
simulated lineage (same gene programme, another draw of cells: another lab's pancreas, not the
cells screened). Then the screen (seeds 0-4, no surrogates) and the zero-shot kNN on the demo's
corpus cells (the demo model: 0.833).

Run after the demo (``--cells 0``: no added cells, the demo's vocabulary, a control):
``PYTHONPATH=src .venv/bin/python benchmarks/fluctuation_perturbation_own_tokens.py --out /tmp/fp_own
--cells 1800 --steps 2400 --seed 0``; then ``benchmarks/fluctuation_perturbation_bench.py --model
/tmp/fp_own/model --medians /tmp/fp_own/gene_medians.tsv --shift contrast`` (numbers: benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import datasets
import numpy as np
import pandas as pd
import torch
import yaml

from cellfate.corpus.tokenizer import RankValueTokenizer
from cellfate.foundation import fate_screen as fs
from cellfate.foundation.train import TrainSettings, train
from cellfate.simulate.bifurcation import BifurcationSpec, draw_programme, expected_counts, sample_pseudotime
from cellfate.simulate.corpus import sample_rng

SHARDS = ["panglaodb/SRA900001_SRS900001", "panglaodb/SRA900001_SRS900002", "expression_atlas/E-MTAB-90001",
          "cellxgene/c3f7a2d0-5b1e-4e8a-9d2c-000000000001"]


def fresh_cells(n_cells: int, seed: int, cell_seed: int) -> ad.AnnData:
    """New cells of the demo's lineage: its programme (config simulate.bifurcation, seed), another
    draw of cells (cell_seed)."""
    sim = yaml.safe_load(Path("config/config.yaml").read_text())["simulate"]
    spec = BifurcationSpec(seed=seed, **sim["bifurcation"])
    programme = draw_programme(spec, sample_rng(seed, "bifurcation"))
    rng = np.random.default_rng([cell_seed, 77])
    pseudotime = sample_pseudotime(spec, n_cells, rng)
    fate = rng.choice(["alpha", "beta"], size=n_cells)
    library = rng.lognormal(0.0, 0.25, n_cells)
    _, mean_s, _ = expected_counts(programme, fate, pseudotime)
    counts = rng.poisson(mean_s * library[:, None]).astype(np.float32)
    obs = pd.DataFrame({"cell_type": np.where(pseudotime < spec.branch_time, "progenitor", fate)})
    return ad.AnnData(X=counts, obs=obs, var=programme.genes[["symbol"]].copy())


def medians(counts: np.ndarray, genes: list[str]) -> pd.DataFrame:
    norm = counts / counts.sum(1, keepdims=True) * 10_000
    rows = [(g, float(np.median(norm[norm[:, j] > 0, j])), int((norm[:, j] > 0).sum()))
            for j, g in enumerate(genes) if (norm[:, j] > 0).any()]
    return pd.DataFrame(rows, columns=["gene_id", "median", "n_cells"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results")
    p.add_argument("--out", default="/tmp/fp_own")
    p.add_argument("--cells", type=int, default=600, help="pancreas cells added (0: none, the demo's vocabulary)")
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--seed", type=int, default=0, help="pretraining seed")
    a = p.parse_args()
    torch.set_num_threads(1)
    r, out = Path(a.results), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((r / "tokenize/token_dictionary.json").read_text())
    simulate_seed = yaml.safe_load(Path("config/config.yaml").read_text())["simulate"]["seed"]
    cells = fresh_cells(max(a.cells, 1), simulate_seed, 1)
    new = [g for g in cells.var_names if g not in vocab] if a.cells else []
    vocab = vocab | {g: len(vocab) + i for i, g in enumerate(new)}
    (out / "token_dictionary.json").write_text(json.dumps(vocab))
    corpus_medians = pd.read_csv(r / "tokenize/gene_medians.tsv", sep="\t")
    table = pd.concat([corpus_medians, medians(np.asarray(cells.X), list(cells.var_names)).query("gene_id in @new")])
    table.sort_values("gene_id").to_csv(out / "gene_medians.tsv", sep="\t", index=False)
    tok = RankValueTokenizer(vocab, dict(zip(table["gene_id"], table["median"])), "v2", 64)
    rows = fs.tokenize_counts(cells.X, list(cells.var_names), tok) * a.copies
    shard = out / "pancreas"
    data = {"input_ids": [x.tolist() for x in rows], "length": [len(x) for x in rows]}
    data |= {c: ["pancreas"] * len(rows) for c in ("source", "sample", "tissue")}
    data["cell_type"] = list(cells.obs["cell_type"]) * a.copies
    datasets.Dataset.from_dict(data).save_to_disk(str(shard))
    np.save(str(shard) + ".lengths.npy", np.array(data["length"], dtype=np.int32))
    mean_length = np.mean(data["length"])
    print(f"{len(new)} new tokens; pancreas shard {len(rows)} cells, mean length {mean_length:.1f}", flush=True)
    shards = [str(r / "tokenize/shards" / s) for s in SHARDS] + ([str(shard)] if a.cells else [])
    settings = TrainSettings(token_dictionary=str(out / "token_dictionary.json"),
                             model_config="config/models/tiny.yaml", shards=shards, output_model=str(out / "model"), checkpoint_dir=str(out / "ckpt"),
                             history=str(out / "history.tsv"), heldout=str(out / "heldout.tsv"), max_steps=a.steps,
                             batch_size=16, lr=0.005, warmup_steps=60, heldout_fraction=0.1, eval_every=100,
                             checkpoint_every=10_000, log_every=100, megabatch_batches=10, num_workers=0,
                             device="cpu", seed=a.seed)
    t0, c0 = time.time(), time.process_time()
    train(settings)
    print(f"pretraining: {time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU", flush=True)
    print(pd.read_csv(out / "heldout.tsv", sep="\t").tail(2).to_string(), flush=True)
    knn(out / "model", [str(r / "tokenize/shards" / s) for s in SHARDS])


def knn(model: Path, shards: list[str]) -> None:
    """Zero-shot kNN over the demo corpus' cell types (as pretrain_card: k = 10, cosine, 5-fold)."""
    from cellfate.foundation.cells import load_cells
    from cellfate.foundation.embed import Embedder, load_pretrained
    from cellfate.foundation.learning import knn_cv_accuracy, untrained_copy

    pre = load_pretrained(str(model), "cpu")
    cells = load_cells(shards, attributes=("cell_type",), max_cells=20_000, seed=0)
    y = cells.obs["cell_type"].astype(str).to_numpy()
    trained = knn_cv_accuracy(Embedder(pre).embed(cells.rows(), desc="kNN"), y, 10)
    control = knn_cv_accuracy(Embedder(untrained_copy(pre, 0)).embed(cells.rows(), desc="kNN control"), y, 10)
    print(f"kNN (demo corpus, 8 labels): trained {trained:.3f}, untrained {control:.3f}", flush=True)


if __name__ == "__main__":
    main()
