"""Pretraining throughput of one process: tokens/s, samples/s and model FLOPs utilisation (MFU).

Runs the real training step of ``cellfate.foundation.train`` (masked-LM objective on the masked
positions only, AdamW, gradient clipping, bf16 autocast on GPU) on synthetic full-length cells, so
data loading is excluded: this is the ceiling the data pipeline has to feed. In the same run and
on the same model and batch, the baseline: ``BertForMaskedLM``'s own loss (the prediction head at
every position, as the Hugging Face Trainer that Geneformer used computes it); printed with the
ratio ours / baseline (``--no-baseline`` skips it). Not part of ``make test``.

    python benchmarks/pretrain_bench.py                       # base config, 2,048 tokens x 12 cells
    python benchmarks/pretrain_bench.py --seq-len 512 --batch-size 4 --steps 3   # a quick CPU look

``--trainer SRC [SRC ...]``: instead, the whole trainer (``cellfate.foundation.train.train``:
data loader, masking, step, bookkeeping) on a synthetic tokenized corpus written to a temporary
folder, once per source tree given (e.g. the current ``src`` and a ``git archive`` of the
previous commit's), each in a fresh process, alternating ``--repeats`` times: the before/after
check that a trainer change does not cost CPU tokens/s. Tokens/s are read from the history rows
after the first ``log_every`` window (start-up excluded). With ``--packing`` each tree also runs
with ``pretrain.packing`` on; ``--min-len`` sets the shortest cell (default 3/4 of ``--seq-len``).

``--packing``: padded vs packed batches (``pretrain.packing``) of the same cells in the same run:
cells of random lengths in [``--min-len``, ``--seq-len``], ``--batches`` batches either as drawn
(``--order random``: no length grouping) or as the trainer's length-grouped sampler cuts them
(``--order grouped``: consecutive cells of a length-sorted pool of 1,000 batches, batches spread
evenly over it); each repeat times one pass over all batches per layout, alternating
the layouts, and reports real (non-padding) tokens/s per run. One model serves both layouts (the
packed attention hands padded batches to SDPA, as in the trainer).

    python benchmarks/pretrain_bench.py --packing --min-len 100 --seq-len 2048 --batch-size 8 --repeats 3

MFU = model FLOPs per second / the device's peak dense bf16 FLOPs. Model FLOPs count the matrix
products of the forward pass (x3 for forward + backward): per layer 8·L·d² (Q, K, V, output
projections) + 4·L²·d (scores and weighted sum) + 4·L·d·f (feed-forward), plus the prediction head
on the masked positions only (2·m·d² + 2·m·d·V with m = 15% of L), which is what our objective
computes. Peaks are looked up from the GPU's name (or given with ``--peak-tflops``); on CPU MFU is
reported only when a peak is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from cellfate.foundation.collator import MaskingCollator, masking_generator
from cellfate.foundation.config import bert_config, build_model, read_model_yaml
from cellfate.foundation.objective import MaskedLMObjective
from cellfate.foundation.optim import build_optimizer
from cellfate.foundation.packing import pack, packed_kwargs, takes_varlen, use_packed_attention
from cellfate.foundation.train import autocast_context
from cellfate.foundation.vocab import TokenDictionary, load_token_dictionary

REPO = Path(__file__).resolve().parents[1]
MOUSE_VOCAB = 56_084  # the released Mouse-Geneformer vocabulary (2 special tokens + 56,082 genes)
# Dense bf16 peak TFLOP/s (no sparsity), by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10", 125.0),
]


def synthetic_vocab(size: int) -> TokenDictionary:
    tokens = {"<pad>": 0, "<mask>": 1} | {f"ENSMUSG{i:011d}": i + 2 for i in range(size - 2)}
    return TokenDictionary(path="<synthetic>", token_to_id=tokens)


def training_flops_per_sample(config, seq_len: int, mask_fraction: float) -> float:
    """Forward + backward matmul FLOPs of one full-length cell (see the module docstring)."""
    d, f, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    per_layer = 8 * seq_len * d * d + 4 * seq_len * seq_len * d + 4 * seq_len * d * f
    masked = mask_fraction * seq_len
    head = 2 * masked * d * d + 2 * masked * d * vocab
    return 3.0 * (layers * per_layer + head)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def objective_step(objective: MaskedLMObjective, optimizer, batch: dict, device: torch.device, bf16: bool) -> None:
    """One optimizer step on the project's masked-LM objective (mean loss over masked tokens)."""
    with autocast_context(device, bf16):
        loss_sum, count = objective(**batch)
    (loss_sum / count.clamp(min=1)).backward()
    torch.nn.utils.clip_grad_norm_(objective.model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def seconds_per_step(step, warmup: int, steps: int, device: torch.device) -> float:
    """Mean wall seconds of ``steps`` calls after ``warmup`` untimed ones (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "config/models/base.yaml"))
    parser.add_argument("--token-dictionary", help="take the vocabulary from this file (default: 56,084 tokens)")
    parser.add_argument("--vocab-size", type=int, default=MOUSE_VOCAB)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, kernels)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's peak (overrides the lookup; needed for CPU MFU)"
    )
    parser.add_argument("--out", help="also write the result as JSON here")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time BertForMaskedLM's own loss (logits at every position) on the same batch",
    )
    parser.add_argument("--packing", action="store_true", help="compare padded and packed batches instead")
    parser.add_argument("--min-len", type=int, default=100, help="--packing: shortest cell")
    parser.add_argument("--batches", type=int, default=4, help="--packing: batches per timed pass")
    parser.add_argument("--order", choices=["random", "grouped"], default="grouped", help="--packing: cell order")
    parser.add_argument("--repeats", type=int, default=3, help="--packing: timed passes per layout")
    args = parser.parse_args(argv)

    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    vocab = load_token_dictionary(args.token_dictionary) if args.token_dictionary else synthetic_vocab(args.vocab_size)
    config = bert_config(read_model_yaml(args.model), vocab, args.model)
    if args.seq_len > config.max_position_embeddings:
        parser.error(f"--seq-len {args.seq_len} exceeds the model's {config.max_position_embeddings} positions")
    torch.manual_seed(0)
    model = build_model(config).to(device)
    objective = MaskedLMObjective(model)
    optimizer = build_optimizer(model, 1e-4, 0.001, fused=device.type == "cuda")
    collator = MaskingCollator(vocab, config.max_position_embeddings)
    generator = torch.Generator().manual_seed(0)
    if args.packing:
        return packing_compare(args, model, optimizer, collator, device)
    cells = torch.randint(2, vocab.vocab_size, (args.batch_size, args.seq_len), generator=generator)
    batch = {k: v.to(device) for k, v in collator(list(cells.numpy()), generator).items()}

    def step() -> None:
        objective_step(objective, optimizer, batch, device, args.bf16)

    def baseline_step() -> None:
        """The Hugging Face way (Geneformer's Trainer): ``BertForMaskedLM``'s own loss, logits at every position."""
        with autocast_context(device, args.bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = seconds_per_step(step, args.warmup, args.steps, device)
    baseline_seconds = seconds_per_step(baseline_step, args.warmup, args.steps, device) if args.baseline else None
    samples_per_s = args.batch_size / seconds
    flops = training_flops_per_sample(config, args.seq_len, collator.mlm_probability) * samples_per_s
    peak = peak_tflops(device, args.peak_tflops)
    result = {
        "model": Path(args.model).name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": vocab.vocab_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "bf16": bool(args.bf16 and device.type == "cuda"),
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "seconds_per_step": seconds,
        "tokens_per_s": args.batch_size * args.seq_len / seconds,
        "samples_per_s": samples_per_s,
        "model_tflops_per_s": flops / 1e12,
        "peak_tflops": peak,
        "mfu": flops / (peak * 1e12) if peak else None,
        "baseline_tokens_per_s": args.batch_size * args.seq_len / baseline_seconds if baseline_seconds else None,
        "ratio_vs_baseline": baseline_seconds / seconds if baseline_seconds else None,
    }
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a (no peak for this device; pass --peak-tflops)"
    print(
        f"{result['model']} ({result['parameters'] / 1e6:.1f}M parameters) on {result['device']}, "
        f"{args.batch_size} x {args.seq_len} tokens, bf16={result['bf16']}:\n"
        f"  {result['tokens_per_s']:,.0f} tokens/s  {samples_per_s:,.2f} samples/s  "
        f"{result['model_tflops_per_s']:.3f} model TFLOP/s  MFU {mfu}",
        file=sys.stderr,
    )
    if baseline_seconds:
        print(
            f"  baseline (BertForMaskedLM's own loss, logits at all {args.seq_len} positions), same model and batch: "
            f"{result['baseline_tokens_per_s']:,.0f} tokens/s; ours / baseline {result['ratio_vs_baseline']:.2f}x",
            file=sys.stderr,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


def packing_batches(args, collator: MaskingCollator, device: torch.device) -> dict[str, list]:
    """The same masked cells as padded batches and as packed ones, with the keyword arguments of each."""
    import numpy as np

    rng = np.random.default_rng(0)
    lengths = rng.integers(args.min_len, args.seq_len + 1, args.batch_size * args.batches)
    if args.order == "grouped":  # as the sampler's mega-batches of 1,000 batches: neighbours in a sorted pool
        pool = np.sort(rng.integers(args.min_len, args.seq_len + 1, args.batch_size * 1000))[::-1]
        starts = np.linspace(0, len(pool) - args.batch_size, args.batches).astype(int)
        lengths = np.concatenate([pool[s : s + args.batch_size] for s in starts])
    varlen = takes_varlen(device, args.bf16, collator_dropout(args))
    layouts: dict[str, list] = {"padded": [], "packed": []}
    for b in range(args.batches):
        cells = [rng.integers(2, collator.vocab_size, n) for n in lengths[b * args.batch_size : (b + 1) * args.batch_size]]
        padded = collator.mask(collator.pad(cells), masking_generator(0, 0, b))
        packed = pack(padded, collator.pad_id, 8 if device.type == "cuda" else 1)
        extra = {"attention_mask": None} if bool(padded["attention_mask"].all()) else {}
        layouts["padded"].append(({k: v.to(device) for k, v in padded.items()} | extra, padded["input_ids"].numel()))
        kwargs = packed_kwargs(packed, spans=not varlen)
        layouts["packed"].append(({k: v.to(device) for k, v in packed.items()} | kwargs, packed["input_ids"].numel()))
    layouts["real_tokens"] = int(lengths.sum())
    return layouts


def collator_dropout(args) -> float:
    return float(read_model_yaml(args.model)["attention_probs_dropout_prob"])


def packing_compare(args, model, optimizer, collator: MaskingCollator, device: torch.device) -> dict:
    """Real tokens/s of padded and packed batches of the same cells, alternating, ``--repeats`` passes each."""
    use_packed_attention(model)
    objective = MaskedLMObjective(model)
    layouts = packing_batches(args, collator, device)
    real = layouts.pop("real_tokens")

    def one_pass(batches) -> None:
        for batch, _ in batches:
            objective_step(objective, optimizer, batch, device, args.bf16)

    rates: dict[str, list[float]] = {name: [] for name in layouts}
    for repeat in range(args.repeats):
        for name, batches in layouts.items():
            rates[name].append(real / seconds_per_step(lambda: one_pass(batches), 1 if repeat == 0 else 0, 1, device))
    computed = {name: sum(n for _, n in batches) for name, batches in layouts.items()}
    print(
        f"{Path(args.model).name} on {device}, {torch.get_num_threads()} thread(s), {args.batches} batches of "
        f"{args.batch_size} cells of {args.min_len}-{args.seq_len} tokens ({args.order} order), {real:,} real tokens",
        file=sys.stderr,
    )
    for name, values in rates.items():
        mean = sum(values) / len(values)
        ratio = mean / (sum(rates["padded"]) / len(rates["padded"]))
        print(
            f"  {name}: {computed[name]:,} tokens computed ({1 - real / computed[name]:.1%} padding); real tokens/s "
            f"per run {', '.join(f'{v:,.0f}' for v in values)}; mean {mean:,.0f} ({ratio:.2f}x padded)",
            file=sys.stderr,
        )
    result = {"rates": rates, "computed": computed, "real_tokens": real, "order": args.order}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


def write_corpus(
    folder: Path, vocab: TokenDictionary, n_cells: int, seq_len: int, seed: int = 0, min_len: int | None = None
) -> Path:
    """A tokenized shard (save_to_disk folder + lengths file) of random cells of ``min_len`` (default 3/4 of
    ``seq_len``) to ``seq_len`` tokens."""
    import datasets
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len or 3 * seq_len // 4, seq_len + 1, n_cells)
    rows = [rng.choice(np.arange(2, vocab.vocab_size), size=n, replace=False).tolist() for n in lengths]
    shard = folder / "shard"
    datasets.Dataset.from_dict({"input_ids": rows, "length": lengths.tolist()}).save_to_disk(str(shard))
    np.save(folder / "shard.lengths.npy", lengths.astype(np.int64))
    return shard


def trainer_child(
    folder: str, model: str, batch_size: int, steps: int, log_every: int, threads: int, packing: int = 0
) -> None:
    """One run of the trainer from whatever ``cellfate`` is first on the path; prints its tokens/s."""
    import math

    import pandas as pd

    from cellfate.foundation.train import TrainSettings, train

    torch.set_num_threads(threads)
    out = Path(folder) / f"run_{os.getpid()}"
    settings = TrainSettings(
        token_dictionary=f"{folder}/token_dictionary.json", model_config=model, shards=[f"{folder}/shard"],
        output_model=str(out / "model"), checkpoint_dir=str(out / "ckpt"), history=str(out / "history.tsv"),
        heldout=str(out / "heldout.tsv"), max_steps=steps, batch_size=batch_size, warmup_steps=1,
        heldout_fraction=0.02, eval_every=10**6, checkpoint_every=10**6, log_every=log_every, num_workers=0,
        megabatch_batches=4, device="cpu", **({"packing": True} if packing else {}))
    history = pd.DataFrame(train(settings).history)
    rates = history["tokens_per_s"].dropna().to_numpy()[1:]  # the first window holds start-up
    print("RESULT " + json.dumps({"tokens_per_s": float(rates.mean()) if len(rates) else math.nan}), flush=True)


def trainer_compare(args) -> None:
    import subprocess
    import tempfile

    from cellfate.corpus.dictionary import save_token_dictionary

    vocab = synthetic_vocab(args.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_token_dictionary(vocab.token_to_id, folder / "token_dictionary.json")
        write_corpus(folder, vocab, args.batch_size * (args.steps + 4), args.seq_len, min_len=args.min_len)
        # --packing: each tree also with pretrain.packing on (trees that know the setting only)
        runs = [(src, 0) for src in args.trainer] + [(src, 1) for src in args.trainer if args.packing]
        rates: dict[str, list[float]] = {src + (" (packed)" if p else ""): [] for src, p in runs}
        for _ in range(args.repeats):
            for src, packing in runs:
                proc = subprocess.run(
                    [sys.executable, __file__, "_trainer", tmp, args.model, str(args.batch_size), str(args.steps),
                     str(args.log_every), str(args.threads), str(packing)],
                    capture_output=True, text=True, env=os.environ | {"PYTHONPATH": src, "TQDM_DISABLE": "1"})
                if proc.returncode:
                    raise SystemExit(f"trainer from {src} failed:\n{proc.stderr[-3000:]}")
                line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
                rates[src + (" (packed)" if packing else "")].append(json.loads(line[7:])["tokens_per_s"])
    first = args.trainer[0]
    for src, values in rates.items():
        ratio = (sum(values) / len(values)) / (sum(rates[first]) / len(rates[first]))
        print(f"trainer from {src}: tokens/s per run {', '.join(f'{v:,.0f}' for v in values)}; "
              f"mean {sum(values) / len(values):,.0f} ({ratio:.3f}x {first})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_trainer":
        trainer_child(sys.argv[2], sys.argv[3], *map(int, sys.argv[4:9]))
    elif "--trainer" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--trainer", nargs="+", required=True, help="source trees (folders holding cellfate/)")
        parser.add_argument("--model", default=str(REPO / "config/models/tiny.yaml"))
        parser.add_argument("--vocab-size", type=int, default=2_000)
        parser.add_argument("--batch-size", type=int, default=4)
        parser.add_argument("--seq-len", type=int, default=256)
        parser.add_argument("--steps", type=int, default=30)
        parser.add_argument("--log-every", type=int, default=10)
        parser.add_argument("--threads", type=int, default=1)
        parser.add_argument("--repeats", type=int, default=2)
        parser.add_argument("--min-len", type=int, help="shortest cell (default 3/4 of --seq-len)")
        parser.add_argument("--packing", action="store_true", help="also run each tree with pretrain.packing on")
        trainer_compare(parser.parse_args())
    else:
        main()
