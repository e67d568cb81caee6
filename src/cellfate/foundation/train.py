"""Masked-gene-model pretraining: the loop, run once per process under ``torchrun``.

``python -m cellfate.foundation.train --help`` lists the settings. One process per GPU (DDP over
NCCL, bf16 autocast) or per CPU process (gloo, fp32); a world of one needs no torchrun at all.

What one optimizer step does: take ``grad_accumulation`` batches from the length-grouped stream,
mask each with a generator keyed by (seed, epoch, batch, rank), count the masked tokens of the
step over all ranks, and back-propagate sum(cross-entropy) / that count, so the gradient is the
token-weighted mean over the whole step whatever the split over micro-batches and ranks. Then
clip, AdamW, advance the schedule. With ``packing`` each batch's cells are laid end to end with
attention restricted to each cell (``cellfate.foundation.packing``): no compute on padding, the
same masks and (up to float rounding) the same loss.

Every ``checkpoint_every`` steps the full state is written atomically; ``--resume`` continues from
it, reaching the same weights as an uninterrupted run (bit-exact on CPU). A checkpoint written
under other settings (corpus, model, schedule, world size) is not resumed: the run starts afresh. Rank 0 writes the
history (step, train loss, lr, tokens/s, held-out loss at evaluation steps), the held-out MLM
loss table and, at the end, the model with ``save_pretrained`` plus the token dictionary.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from cellfate.errors import CellfateError
from cellfate.foundation.checkpoint import (
    LATEST,
    fingerprint_change,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from cellfate.foundation.collator import IGNORE_INDEX, MaskingCollator, masking_generator
from cellfate.foundation.config import bert_config, build_model, model_yaml, read_model_yaml, write_model_yaml
from cellfate.foundation.data import Corpus, load_corpus, split_heldout
from cellfate.foundation.distributed import DistContext, init_distributed
from cellfate.foundation.objective import MaskedLMObjective
from cellfate.foundation.optim import SCHEDULES, build_optimizer, build_scheduler
from cellfate.foundation.packing import (
    is_packed,
    pack,
    packed_kwargs,
    takes_varlen,
    unpacked_for_saving,
    use_packed_attention,
)
from cellfate.foundation.sampler import LengthGroupedBatchSampler
from cellfate.foundation.vocab import TokenDictionary, load_token_dictionary
from cellfate.io import atomic_path, write_table

# Named explicitly: under ``python -m`` this module runs as ``__main__``.
log = logging.getLogger("cellfate.foundation.train")

HISTORY_COLUMNS = ["step", "epoch", "train_loss", "lr", "tokens_per_s", "heldout_loss"]


@dataclass
class TrainSettings:
    """Everything a pretraining run depends on; the CLI flags are these names with dashes."""

    token_dictionary: str
    model_config: str
    shards: list[str]
    output_model: str
    checkpoint_dir: str
    history: str
    heldout: str
    epochs: float = 1.0
    max_steps: int | None = None  # when set, overrides epochs
    batch_size: int = 12  # per process (per GPU)
    grad_accumulation: int = 1
    lr: float = 1e-3
    warmup_steps: int = 10_000
    schedule: str = "cosine"
    weight_decay: float = 0.001
    max_grad_norm: float = 1.0
    mlm_probability: float = 0.15
    heldout_fraction: float = 0.01
    heldout_max_cells: int = 10_000
    eval_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    seed: int = 0
    megabatch_batches: int = 1000
    num_workers: int = 2
    device: str = "auto"  # auto | cuda | cpu
    bf16: bool = True  # bf16 autocast on CUDA; CPU always computes in fp32
    compile: bool = False  # torch.compile the objective (dynamic shapes): fused kernels on GPU; off by default
    packing: bool = False  # each batch's cells end to end in one row, attention within each cell: no padding
    resume: bool = False
    stop_after_step: int | None = field(default=None, repr=False)  # tests: stop as if killed after this step

    def check(self) -> None:
        """One-line errors for values no run can use."""
        positive = (
            "batch_size",
            "grad_accumulation",
            "eval_every",
            "checkpoint_every",
            "log_every",
            "megabatch_batches",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise CellfateError(f"pretrain setting {name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise CellfateError(f"pretrain setting max_steps must be at least 1, got {self.max_steps}")
        if self.max_steps is None and not self.epochs > 0:
            raise CellfateError(f"pretrain setting epochs must be positive, got {self.epochs}")
        if self.schedule not in SCHEDULES:
            raise CellfateError(
                f"pretrain setting schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if not 0 <= self.heldout_fraction < 1:
            raise CellfateError(f"pretrain setting heldout_fraction must lie in [0, 1), got {self.heldout_fraction}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise CellfateError(
                "pretrain settings lr and max_grad_norm must be positive, warmup_steps and weight_decay >= 0"
            )
        if self.device not in ("auto", "cuda", "cpu"):
            raise CellfateError(f"pretrain setting device must be auto, cuda or cpu, got {self.device!r}")


@dataclass
class TrainResult:
    """What a finished (or deliberately stopped) run leaves in memory, for callers and tests."""

    model: torch.nn.Module
    step: int
    completed: bool
    heldout_loss: float | None
    history: list[dict[str, float]]


class _Window:
    """Global sums since the last history row (identical on every rank), kept on the device.

    Adding each step's sums as device tensors needs no host sync; they are read (``.item()``) only
    when a history row is written (every ``log_every`` steps) or a checkpoint is taken.
    """

    def __init__(self, device: torch.device, loss_sum: float = 0.0, masked: float = 0.0, tokens: float = 0.0) -> None:
        self.sums = torch.tensor([loss_sum, masked, tokens], dtype=torch.float64, device=device)
        self.started = time.perf_counter()

    def add(self, loss_sum: torch.Tensor, counts: torch.Tensor) -> None:
        self.sums[0] += loss_sum
        self.sums[1:] += counts

    def values(self) -> dict[str, float]:
        loss_sum, masked, tokens = self.sums.tolist()
        return {"loss_sum": loss_sum, "masked": masked, "tokens": tokens}


def _fingerprint(settings: TrainSettings, config, corpus: Corpus, world_size: int, total_steps: int) -> dict[str, Any]:
    """The settings that shape the trajectory; a checkpoint only resumes under the same ones."""
    keys = (
        "batch_size",
        "grad_accumulation",
        "lr",
        "warmup_steps",
        "schedule",
        "weight_decay",
        "max_grad_norm",
        "mlm_probability",
        "heldout_fraction",
        "heldout_max_cells",
        "seed",
        "megabatch_batches",
    )
    out: dict[str, Any] = {k: getattr(settings, k) for k in keys}
    out.update(
        model=model_yaml(config),
        world_size=world_size,
        total_steps=total_steps,
        shards=[Path(s).name for s in corpus.shards],
        cells=len(corpus),
    )
    return out


class _KeyedBatches:
    """The sampler's batches as ``(epoch, position, indices)``, so that the collate step knows which batch it masks."""

    def __init__(self, sampler: LengthGroupedBatchSampler, epoch: int, position: int) -> None:
        self.sampler, self.epoch, self.position = sampler, epoch, position

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int, list[int]]]:
        for offset, indices in enumerate(self.sampler):
            yield self.epoch, self.position + offset, indices


class _KeyedCorpus(torch.utils.data.Dataset):
    """Fetches a keyed batch's cells and passes the key along (``__getitems__``: one call per batch)."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitems__(self, keyed: tuple[int, int, list[int]]) -> tuple[int, int, list]:
        epoch, position, indices = keyed
        return epoch, position, self.corpus.__getitems__(indices)


@dataclass
class _PadAndMask:
    """The collate function: pad and mask in the DataLoader's worker processes, not in the training loop.

    The mask generator is keyed by (seed, epoch, batch position, rank) exactly as before, so a
    batch gets the same mask whichever process builds it (and resumed runs stay bit-exact). With
    ``packing`` the padded, masked batch is then packed: the same masks on the same tokens.
    """

    collator: MaskingCollator
    seed: int
    rank: int
    packing: bool = False

    def __call__(self, keyed: tuple[int, int, list]) -> tuple[int, int, dict[str, torch.Tensor]]:
        epoch, position, rows = keyed
        batch = self.collator.mask(self.collator.pad(rows), masking_generator(self.seed, 0, epoch, position, self.rank))
        if self.packing:
            batch = pack(batch, self.collator.pad_id, self.collator.pad_to_multiple_of)
        return epoch, position, batch


def _batch_stream(
    corpus: Corpus,
    sampler: LengthGroupedBatchSampler,
    collate: _PadAndMask,
    epoch: int,
    position: int,
    num_workers: int,
    pin_memory: bool,
) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
    """(epoch, batch position, padded and masked batch) from ``(epoch, position)`` on, epoch after epoch."""
    while True:
        sampler.set_epoch(epoch, position)
        # Its own generator: a DataLoader otherwise draws its worker seed from torch's global generator, which
        # would shift the dropout stream of a resumed run (iterators start at other steps) off the original.
        seeds = torch.Generator().manual_seed(sampler.seed * 1_000_003 + epoch)
        loader = DataLoader(
            _KeyedCorpus(corpus),
            batch_sampler=_KeyedBatches(sampler, epoch, position),
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=pin_memory,
            generator=seeds,
        )
        for batch in loader:
            yield batch
            position += 1
        epoch, position = epoch + 1, 0


def _empty_stand_in(collator: MaskingCollator) -> dict[str, torch.Tensor]:
    """A one-token batch with no label: a rank without cells still runs forward/backward (zero gradient)
    so that DDP's gradient all-reduce sees every rank."""
    ids = torch.full((1, 1), collator.pad_id, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full_like(ids, IGNORE_INDEX)}


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast_context(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA; CPU runs in fp32 (exact and reproducible)."""
    if device.type == "cuda" and bf16:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(
    objective: MaskedLMObjective,
    corpus: Corpus,
    sampler: LengthGroupedBatchSampler,
    collator: MaskingCollator,
    ctx: DistContext,
    seed: int,
    bf16: bool,
) -> tuple[float, int]:
    """Held-out MLM loss (token-weighted mean over all ranks) and its number of masked tokens.

    The masks are fixed by the seed, so evaluations at different steps score the same task.
    """
    was_training = objective.training
    objective.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    with torch.no_grad():
        for k, cells in enumerate(sampler.rank_batches(0)):
            if not cells:
                continue
            batch = collator.mask(collator.pad(corpus.__getitems__(cells)), masking_generator(seed, 1, k, ctx.rank))
            with autocast_context(ctx.device, bf16):
                loss_sum, count = objective(**_to_device(batch, ctx.device))
            totals += torch.stack([loss_sum.double(), count.double()])
    ctx.all_reduce_sum(totals)
    objective.train(was_training)
    loss_sum, count = totals.tolist()
    return (loss_sum / count if count else float("nan")), int(count)


def _write_history(path: str, history: list[dict[str, float]]) -> None:
    write_table(pd.DataFrame(history, columns=HISTORY_COLUMNS), path)


def _write_heldout(path: str, step: int, loss: float | None, count: int, n_heldout: int, n_train: int) -> None:
    value = float("nan") if loss is None else loss
    frame = pd.DataFrame(
        [
            {
                "step": step,
                "heldout_mlm_loss": value,
                "heldout_perplexity": math.exp(value) if value == value else value,
                "heldout_cells": n_heldout,
                "masked_tokens": count,
                "train_cells": n_train,
            }
        ]
    )
    write_table(frame, path)


def _save_model(model, config, vocab: TokenDictionary, directory: str) -> None:
    """``save_pretrained`` plus the token dictionary and the model YAML, appearing in one rename."""
    with atomic_path(directory, is_dir=True) as tmp, unpacked_for_saving(model):
        model.save_pretrained(tmp)
        shutil.copyfile(vocab.path, Path(tmp) / "token_dictionary.json")
        write_model_yaml(config, Path(tmp) / "model.yaml")


def train(settings: TrainSettings) -> TrainResult:
    """Run (or resume) pretraining in this process; collective with the other ranks under torchrun."""
    settings.check()
    ctx = init_distributed(settings.device)
    try:
        return Trainer(settings, ctx).run()
    finally:
        ctx.close()


class Trainer:
    """One pretraining run in this process: setup, resume, step, bookkeeping (history, eval, checkpoints).

    The construction order is the run's contract with its checkpoints (model weights before the
    move to the device, optimizer and RNG state after the optimizer exists): keep it when editing.
    """

    def __init__(self, settings: TrainSettings, ctx: DistContext) -> None:
        self.settings, self.ctx = settings, ctx
        self.cuda = ctx.device.type == "cuda"
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._setup_data()
        torch.manual_seed(settings.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        self.model = build_model(self.config)
        self.fingerprint = _fingerprint(settings, self.config, self.corpus, ctx.world_size, self.total_steps)
        self.step, self.epoch, self.position, self.history = 0, 0, 0, []
        checkpoint = self._read_checkpoint()
        self.window = _Window(ctx.device, **(checkpoint["window"] if checkpoint else {}))
        self._setup_model()
        self._resume(checkpoint)
        self._log_setup()

    # -- setup -------------------------------------------------------------------------------------
    def _setup_data(self) -> None:
        settings, ctx = self.settings, self.ctx
        self.vocab = load_token_dictionary(settings.token_dictionary)
        self.config = bert_config(read_model_yaml(settings.model_config), self.vocab, settings.model_config)
        self.corpus = load_corpus(settings.shards)
        if self.corpus.lengths.max() > self.config.max_position_embeddings:
            raise CellfateError(
                f"cells have up to {self.corpus.lengths.max()} tokens but the model takes "
                f"{self.config.max_position_embeddings} (max_position_embeddings): tokenize with a smaller maximum "
                "length or use a model with more positions",
                settings.model_config,
            )
        self.train_idx, self.heldout_idx = split_heldout(
            self.corpus.lengths, settings.heldout_fraction, settings.heldout_max_cells, settings.seed
        )
        grouped = dict(num_replicas=ctx.world_size, rank=ctx.rank, megabatch_batches=settings.megabatch_batches)
        self.sampler = LengthGroupedBatchSampler(
            self.corpus.lengths, settings.batch_size, indices=self.train_idx, seed=settings.seed, **grouped
        )
        self.eval_sampler = None
        if len(self.heldout_idx):
            self.eval_sampler = LengthGroupedBatchSampler(
                self.corpus.lengths, settings.batch_size, indices=self.heldout_idx, shuffle=False, **grouped
            )
        self.per_epoch = len(self.sampler)
        self.total_steps = settings.max_steps or max(
            1, math.ceil(settings.epochs * self.per_epoch / settings.grad_accumulation)
        )
        if settings.warmup_steps >= self.total_steps:
            log.warning(
                "warmup_steps %d >= total steps %d: the learning rate never reaches its peak %g",
                settings.warmup_steps,
                self.total_steps,
                settings.lr,
            )
        self.collator = MaskingCollator(
            self.vocab,
            self.config.max_position_embeddings,
            mlm_probability=settings.mlm_probability,
            pad_to_multiple_of=8 if self.cuda else 1,
        )

    def _read_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (model weights and counters applied), or None."""
        settings = self.settings
        checkpoint = load_checkpoint(settings.checkpoint_dir) if settings.resume else None
        self.checkpoint_path = Path(settings.checkpoint_dir) / LATEST
        change = None if checkpoint is None else fingerprint_change(checkpoint["fingerprint"], self.fingerprint)
        if change:
            log.warning(
                "not resuming from %s: %s; training afresh (the next checkpoint replaces it)", self.checkpoint_path, change
            )
            checkpoint = None
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.step, self.epoch, self.position = checkpoint["step"], checkpoint["epoch"], checkpoint["position"]
            self.history = checkpoint["history"]
            log.info(
                "resuming from %s at step %d (epoch %d, batch %d)", self.checkpoint_path, self.step, self.epoch, self.position
            )
        return checkpoint

    def _setup_model(self) -> None:
        settings, ctx = self.settings, self.ctx
        self.model.to(ctx.device)
        if settings.packing:
            use_packed_attention(self.model)
        # Packed batches on the varlen kernel need no host-side cell spans (see cellfate.foundation.packing).
        self.cell_spans = not takes_varlen(
            ctx.device, self.cuda and settings.bf16, self.config.attention_probs_dropout_prob
        )
        self.objective = MaskedLMObjective(self.model)
        self.wrapped: torch.nn.Module = self.objective
        if settings.compile:
            self.wrapped = torch.compile(self.objective, dynamic=True)
        if ctx.distributed:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                self.wrapped, device_ids=[ctx.local_rank] if self.cuda else None
            )
        self.optimizer = build_optimizer(self.model, settings.lr, settings.weight_decay, fused=self.cuda)
        self.scheduler = build_scheduler(self.optimizer, settings.schedule, settings.warmup_steps, self.total_steps)

    def _resume(self, checkpoint: dict[str, Any] | None) -> None:
        if checkpoint is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            set_rng_state(checkpoint["rng"][self.ctx.rank])
        else:
            torch.manual_seed(self.settings.seed + 1 + self.ctx.rank)  # dropout: independent draws per rank

    def _log_setup(self) -> None:
        settings = self.settings
        log.info(
            "model %s: %.2fM parameters, vocabulary %d; %d train / %d held-out cells; %d processes on %s; "
            "%d batches of %d per process per epoch, %d steps (grad accumulation %d)",
            Path(settings.model_config).name,
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            self.vocab.vocab_size,
            len(self.train_idx),
            len(self.heldout_idx),
            self.ctx.world_size,
            self.ctx.device.type,
            self.per_epoch,
            settings.batch_size,
            self.total_steps,
            settings.grad_accumulation,
        )

    # -- one optimizer step --------------------------------------------------------------------------
    def train_step(self, stream: Iterator[tuple[int, int, dict[str, torch.Tensor]]]) -> None:
        """Take ``grad_accumulation`` batches (masked in the data workers), back-propagate, step; no host sync."""
        settings, ctx = self.settings, self.ctx
        micro, extra = [], []
        for _ in range(settings.grad_accumulation):
            batch_epoch, batch_position, batch = next(stream)
            # Read from the host tensors: no device sync. No padding (common: length-grouped batches of cells cut
            # at the model's length): no mask, so SDPA may take its fused (flash) kernel, which a mask rules out.
            if is_packed(batch):
                extra.append(packed_kwargs(batch, spans=self.cell_spans))
            else:
                extra.append({"attention_mask": None} if bool(batch["attention_mask"].all()) else {})
            micro.append(_to_device(batch, ctx.device))
            self.epoch, self.position = batch_epoch, batch_position + 1
        counts = torch.stack(
            [
                sum((m["labels"] != IGNORE_INDEX).sum() for m in micro),
                sum(m["attention_mask"].sum() for m in micro),
            ]
        ).to(torch.float64)
        ctx.all_reduce_sum(counts)
        # DDP averages gradients over ranks; this scale turns that into the mean over every masked token
        scale = (ctx.world_size / counts[0].clamp(min=1)).float()
        step_loss = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for i, batch in enumerate(micro):
            if batch["input_ids"].numel() == 0:
                batch = _to_device(_empty_stand_in(self.collator), ctx.device)
            batch = batch | extra[i]
            last = i == len(micro) - 1
            with self.wrapped.no_sync() if ctx.distributed and not last else contextlib.nullcontext():
                with autocast_context(ctx.device, settings.bf16):
                    loss_sum, _ = self.wrapped(**batch)
                (loss_sum * scale).backward()
            step_loss += loss_sum.detach().double()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        ctx.all_reduce_sum(step_loss)
        self.window.add(step_loss, counts)

    # -- bookkeeping ---------------------------------------------------------------------------------
    def _row(self) -> dict[str, float]:
        if not self.history or self.history[-1]["step"] != self.step:
            self.history.append({c: float("nan") for c in HISTORY_COLUMNS} | {"step": self.step})
        return self.history[-1]

    def flush_window(self) -> None:
        """A history row from the window's sums: the one place the step sums reach the host."""
        sums = self.window.values()
        if sums["masked"] == 0 and sums["tokens"] == 0:
            return
        seconds = max(time.perf_counter() - self.window.started, 1e-9)
        row = self._row()
        row.update(
            epoch=self.step * self.settings.grad_accumulation / self.per_epoch,
            train_loss=sums["loss_sum"] / max(sums["masked"], 1),
            lr=self.scheduler.get_last_lr()[0],
            tokens_per_s=sums["tokens"] / seconds,
        )
        if self.ctx.is_main:
            log.info(
                "step %d/%d  epoch %.2f  loss %.4f  lr %.3g  %s tokens/s",
                self.step,
                self.total_steps,
                row["epoch"],
                row["train_loss"],
                row["lr"],
                f"{row['tokens_per_s']:,.0f}",
            )
            self.bar.set_postfix(loss=f"{row['train_loss']:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}")
        self.window = _Window(self.ctx.device)

    def run_eval(self) -> tuple[float | None, int]:
        if self.eval_sampler is None:
            return None, 0
        settings = self.settings
        loss, count = evaluate(
            self.objective, self.corpus, self.eval_sampler, self.collator, self.ctx, settings.seed, settings.bf16
        )
        self._row()["heldout_loss"] = loss
        if self.ctx.is_main:
            log.info("step %d  held-out MLM loss %.4f (%d masked tokens)", self.step, loss, count)
        return loss, count

    def write_checkpoint(self) -> None:
        rngs = self.ctx.all_gather_object(rng_state())
        if self.ctx.is_main:
            state = {
                "format": 1,
                "step": self.step,
                "epoch": self.epoch,
                "position": self.position,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rngs,
                "history": self.history,
                "fingerprint": self.fingerprint,
                "window": self.window.values(),
            }
            save_checkpoint(self.settings.checkpoint_dir, state)
            _write_history(self.settings.history, self.history)
            log.info("checkpoint at step %d: %s", self.step, self.checkpoint_path)

    def finish(self) -> TrainResult:
        settings, ctx = self.settings, self.ctx
        self.flush_window()
        heldout, heldout_tokens = self.run_eval()
        self.write_checkpoint()
        if ctx.is_main:
            _write_history(settings.history, self.history)
            _write_heldout(
                settings.heldout, self.step, heldout, heldout_tokens, len(self.heldout_idx), len(self.train_idx)
            )
            _save_model(self.model, self.config, self.vocab, settings.output_model)
            log.info(
                "saved model to %s (held-out MLM loss %s)",
                settings.output_model,
                "n/a" if heldout is None else f"{heldout:.4f}",
            )
        ctx.barrier()
        return TrainResult(self.model, self.step, True, heldout, self.history)

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        settings = self.settings
        collate = _PadAndMask(self.collator, settings.seed, self.ctx.rank, settings.packing)
        stream = _batch_stream(
            self.corpus, self.sampler, collate, self.epoch, self.position, settings.num_workers, pin_memory=self.cuda
        )
        self.bar = tqdm(
            total=self.total_steps, initial=self.step, unit="step", disable=not (self.ctx.is_main and sys.stderr.isatty())
        )
        try:
            while self.step < self.total_steps:
                self.train_step(stream)
                self.bar.update(1)
                step = self.step
                if step % settings.log_every == 0:
                    self.flush_window()
                if step % settings.eval_every == 0 and step < self.total_steps:
                    self.run_eval()
                if step % settings.checkpoint_every == 0 and step < self.total_steps:
                    self.write_checkpoint()
                if settings.stop_after_step is not None and step >= settings.stop_after_step:
                    log.warning("stopping after step %d as asked (stop_after_step), as if killed", step)
                    return TrainResult(self.model, step, False, None, self.history)
            return self.finish()
        finally:
            self.bar.close()
            stream.close()


_FLAG_TYPES = {"str": str, "int": int, "float": float, "int | None": int}


def parse_args(argv: Sequence[str] | None = None) -> TrainSettings:
    """TrainSettings from the command line: each field is a flag (``--batch-size 12``, ``--resume``)."""
    parser = argparse.ArgumentParser(
        prog="python -m cellfate.foundation.train", description="Masked-gene-model pretraining (run under torchrun)."
    )
    for f in fields(TrainSettings):
        flag = "--" + f.name.replace("_", "-")
        extra: dict[str, Any] = {"help": argparse.SUPPRESS} if f.name == "stop_after_step" else {}
        if f.name == "shards":
            parser.add_argument(
                flag, nargs="+", required=True, help="tokenized shard folders (lengths files beside them)"
            )
        elif f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, **extra)
        else:
            required = f.default is dataclasses.MISSING
            parser.add_argument(
                flag, type=_FLAG_TYPES[f.type], required=required, default=None if required else f.default, **extra
            )
    return TrainSettings(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``torchrun ... -m cellfate.foundation.train``: one-line user errors, exit status 1."""
    from cellfate.workflow import configure_logging

    rank = int(os.environ.get("RANK", 0))
    configure_logging(level=logging.INFO if rank == 0 else logging.WARNING)
    try:
        result = train(parse_args(argv))
    except CellfateError as err:
        log.error("[rank %d] %s", rank, err)
        return 1
    return 0 if result.completed else 3


if __name__ == "__main__":
    sys.exit(main())
