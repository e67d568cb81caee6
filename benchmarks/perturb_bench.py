"""In silico perturbation throughput: the batched path against a per-(cell, gene) loop, same model and cells.

    .venv/bin/python benchmarks/perturb_bench.py                        # base model, CPU (or the GPU when visible)
    .venv/bin/python benchmarks/perturb_bench.py --model config/models/tiny.yaml
    .venv/bin/python benchmarks/perturb_bench.py --vocab 56084          # the released mouse model's vocabulary

Cells: demo-like simulated cells (2,000 real mouse genes, four cell types, library ~3,000 UMIs),
rank-value encoded with medians over the simulated cells: ~750 gene tokens per cell. Model: a
random-init ``BertForMaskedLM`` of the given YAML (weights do not change the cost). Perturbations:
``--genes`` expressed genes per cell, overexpressed (moved to the front) or deleted.

The loop is the reference's way (``cellfate.foundation.perturb.loop_shifts``): one forward pass of
the full masked-LM model per (cell, gene), batch of one, ``output_hidden_states``, mean of the
last layer's gene tokens. It is timed on the first ``--loop-jobs`` perturbations (it is slow); the
batched path (``Perturber``: all perturbations sorted by length, one padded batch per forward,
encoder only) on all of them, and again on exactly the loop's jobs (cells differ in length, so
the ratio compares the same work). Both give the same shifts (checked). Printed: perturbations
per second of each and their ratio, plus the ratio against a loop over the encoder only, which
separates what batching gives from what skipping the masked-LM head gives. Not part of
``make test``.

``--int8``: the batched path again with dynamic int8 Linear layers (``quantize_int8``, opt-in
``foundation.perturb.quantize: int8``): its speed ratio and its error against fp32 shifts (max
and mean absolute difference, Spearman correlation). ``--layer``: the read-out layer (layers above
it are never run). Last, a screen of ``--screen-cells`` cells x all their expressed genes
(``--screen-cells`` x mean tokens per cell perturbations) is estimated at the measured rates.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TYPES = ["B cell", "T cell", "macrophage", "endothelial cell"]


def simulated_cells(n_cells: int, n_genes: int, seed: int) -> tuple[list[np.ndarray], dict[str, int]]:
    """Rank-value encoded demo-like cells and their token dictionary."""
    import scipy.sparse as sp

    from cellfate.simulate.corpus import corpus_model, simulate_sample

    model = corpus_model(sorted(TYPES), n_genes, seed)
    adata = simulate_sample(model, "bench", TYPES, n_cells, seed, damaged_fraction=0.0, low_count_fraction=0.0)
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    X = sp.diags(1e4 / np.asarray(X.sum(1)).ravel()) @ X
    csc = X.tocsc()
    detected = np.flatnonzero(np.diff(csc.indptr) > 0)
    medians = np.ones(X.shape[1])
    for j in detected:
        medians[j] = np.median(csc.data[csc.indptr[j] : csc.indptr[j + 1]])
    genes = list(adata.var_names[detected])
    dictionary = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(sorted(genes))}}
    token = np.array([dictionary.get(g, -1) for g in adata.var_names])
    rows = []
    for i in range(X.shape[0]):
        cols = X.indices[X.indptr[i] : X.indptr[i + 1]]
        values = X.data[X.indptr[i] : X.indptr[i + 1]] / medians[cols]
        order = np.lexsort((token[cols], -values))
        rows.append(token[cols][order][:2048].astype(np.int64))
    return rows, dictionary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "config/models/base.yaml"), help="model YAML (config/models/)")
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--genes", type=int, default=16, help="perturbed genes per cell")
    parser.add_argument("--mode", choices=["overexpress", "delete"], default="overexpress")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--loop-jobs", type=int, default=24, help="perturbations timed in the per-(cell, gene) loop")
    parser.add_argument("--vocab", type=int, default=0, help="pad the vocabulary to this size (the LM head's cost)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--int8", action="store_true", help="also time dynamic int8 and report its error vs fp32")
    parser.add_argument("--layer", type=int, default=-1, help="read-out layer (as output_hidden_states, -1 the last)")
    parser.add_argument("--screen-cells", type=int, default=1500, help="cells of the estimated full screen")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from cellfate.foundation.config import bert_config, build_model, read_model_yaml
    from cellfate.foundation.embed import Embedder, Pretrained
    from cellfate.foundation.perturb import GeneMatrix, Perturber, loop_shifts, make_jobs, originals
    from cellfate.foundation.vocab import TokenDictionary
    from cellfate.nn.device import resolve_device

    rows, dictionary = simulated_cells(args.cells + 8, 2000, args.seed)
    for k in range(len(dictionary), args.vocab):
        dictionary[f"ENSMUSG9{k:010d}"] = k  # tokens no cell uses: only the head's width changes
    vocab = TokenDictionary(path="<simulated>", token_to_id=dictionary)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    model = build_model(bert_config(read_model_yaml(args.model), vocab)).to(device).eval()
    pretrained = Pretrained(model, vocab, device, args.model)
    embedder = Embedder(pretrained, batch_size=args.batch_size, precision="fp32", layer=args.layer)
    goal = torch.from_numpy(embedder.embed(rows[args.cells :]).mean(0))
    matrix = GeneMatrix.from_rows(rows[: args.cells], dictionary, model.config.max_position_embeddings)
    rng = np.random.default_rng(args.seed)
    parts = []
    for c in range(args.cells):
        genes = rng.choice(matrix.genes[c, : matrix.lengths[c]], size=min(args.genes, matrix.lengths[c]), replace=False)
        one = make_jobs(matrix, genes, None if args.mode == "delete" else 0, expressed_only=True)
        parts.append(one.take(np.flatnonzero(one.cell == c)))
    from cellfate.foundation.perturb import Jobs

    jobs = Jobs.concat(parts)
    order = np.argsort(jobs.cell, kind="stable")
    jobs = jobs.take(order)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    perturber = Perturber(embedder, args.batch_size)

    perturber.cosines(matrix, jobs.take(np.arange(min(args.batch_size, len(jobs)))), goal[None])  # warm-up
    sync()
    start = time.perf_counter()
    cosine = perturber.cosines(matrix, jobs, goal[None], desc="batched")
    base = perturber.cosines(matrix, originals(matrix), goal[None], desc="originals")
    sync()
    batched_s = time.perf_counter() - start
    batched = cosine[:, 0] - base[jobs.cell, 0]

    subset = jobs.take(np.arange(min(args.loop_jobs, len(jobs))))
    # The loop runs on the first cells only (it is slow); cells differ in length, so the batched
    # path is also timed on exactly that work (same perturbations, same unperturbed cells).
    subset_cells = np.unique(subset.cell)
    sync()
    start = time.perf_counter()
    perturber.cosines(matrix, subset, goal[None], desc="batched (loop's jobs)")
    perturber.cosines(matrix, originals(matrix).take(subset_cells), goal[None], desc="originals")
    sync()
    batched_subset_s = time.perf_counter() - start
    loop_shifts(model, matrix, subset.take(np.arange(2)), goal)  # warm-up
    timings = {}
    for name, net in (("loop_mlm", model), ("loop_encoder", model.bert)):
        sync()
        start = time.perf_counter()
        reference = loop_shifts(net, matrix, subset, goal, layer=args.layer)
        sync()
        timings[name] = time.perf_counter() - start
    max_diff = float(np.abs(reference - batched[: len(subset)]).max())

    n_cells_loop = len(subset_cells)
    result = {
        "model": Path(args.model).name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "vocab": len(dictionary),
        "mean_tokens": float(matrix.lengths[: args.cells].mean()),
        "mode": args.mode,
        "perturbations": len(jobs),
        "batched_per_s": len(jobs) / batched_s,
        "batched_on_loop_jobs_per_s": len(subset) / batched_subset_s,
        "loop_mean_tokens": float(matrix.lengths[subset_cells].mean()),
        # the loop also runs each of its cells once unperturbed: count those passes as work it must do
        "loop_mlm_per_s": len(subset) / timings["loop_mlm"],
        "loop_encoder_per_s": len(subset) / timings["loop_encoder"],
        "loop_forward_passes": len(subset) + n_cells_loop,
        "max_abs_shift_difference": max_diff,
    }
    # like for like: the batched path on the loop's own jobs
    result["ratio_vs_reference_loop"] = result["batched_on_loop_jobs_per_s"] / result["loop_mlm_per_s"]
    result["ratio_vs_encoder_loop"] = result["batched_on_loop_jobs_per_s"] / result["loop_encoder_per_s"]
    print(
        f"model {result['model']} on {result['device']} ({result['threads']} threads), vocabulary {result['vocab']:,}, "
        f"{result['mean_tokens']:.0f} tokens per cell, {args.mode}"
    )
    rate = result["batched_per_s"]
    print(f"batched:                 {rate:9.2f} perturbations/s  ({len(jobs)} perturbations, batch {args.batch_size})")
    print(
        f"  on the loop's jobs:    {result['batched_on_loop_jobs_per_s']:9.2f} perturbations/s  ({len(subset)} perturbations of "
        f"{n_cells_loop} cells, {result['loop_mean_tokens']:.0f} tokens per cell)"
    )
    print(
        f"per-(cell, gene) loop:   {result['loop_mlm_per_s']:9.2f} perturbations/s  (masked-LM model, as the reference)"
    )
    print(f"  encoder-only loop:     {result['loop_encoder_per_s']:9.2f} perturbations/s")
    print(
        f"ratio batched / loop, same jobs: {result['ratio_vs_reference_loop']:.1f}x   (vs encoder-only loop: "
        f"{result['ratio_vs_encoder_loop']:.1f}x); shifts agree to {max_diff:.1e}"
    )
    rates = {"fp32": result["batched_per_s"]}
    if args.int8:
        from scipy.stats import spearmanr

        from cellfate.foundation.perturb import quantize_int8

        quantized = Perturber(quantize_int8(Embedder(pretrained, batch_size=args.batch_size, layer=args.layer)),
                              args.batch_size)
        quantized.cosines(matrix, jobs.take(np.arange(min(args.batch_size, len(jobs)))), goal[None])  # warm-up
        start = time.perf_counter()
        cosine8 = quantized.cosines(matrix, jobs, goal[None], desc="int8")
        base8 = quantized.cosines(matrix, originals(matrix), goal[None], desc="originals")
        rates["int8"] = len(jobs) / (time.perf_counter() - start)
        shifts8 = cosine8[:, 0] - base8[jobs.cell, 0]
        error = np.abs(shifts8 - batched)
        result.update(int8_per_s=rates["int8"], int8_speedup=rates["int8"] / rates["fp32"],
                      int8_max_abs_error=float(error.max()), int8_mean_abs_error=float(error.mean()),
                      fp32_mean_abs_shift=float(np.abs(batched).mean()),
                      int8_spearman=float(spearmanr(shifts8, batched).statistic))
        print(f"int8 (dynamic, opt-in):  {rates['int8']:9.2f} perturbations/s  ({result['int8_speedup']:.2f}x fp32); "
              f"shift error vs fp32: max {result['int8_max_abs_error']:.1e}, mean {result['int8_mean_abs_error']:.1e} "
              f"(mean |shift| {result['fp32_mean_abs_shift']:.1e}), Spearman {result['int8_spearman']:.3f}")
    perturbations = args.screen_cells * result["mean_tokens"]
    result["screen_estimate_hours"] = {k: perturbations / r / 3600 for k, r in rates.items()}
    print(f"estimated screen of {args.screen_cells:,} cells x all expressed genes ({perturbations:,.0f} perturbations at "
          f"{result['mean_tokens']:.0f} tokens per cell) on this {result['device']} with {result['threads']} threads: "
          + ", ".join(f"{k} {h:.1f} h" for k, h in result["screen_estimate_hours"].items())
          + f"; the per-(cell, gene) loop: {perturbations / result['loop_mlm_per_s'] / 3600:.1f} h")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
