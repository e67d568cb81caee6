"""Padding-free (packed) batches for pretraining: every token computed belongs to a cell.

A padded batch costs (cells x longest cell) tokens in every linear layer and (cells x longest²)
in attention. Packing lays the cells of a batch end to end in one row of ``T`` = their total
length, restarts the position ids at 0 in each cell, and restricts attention to each cell, so the
model computes exactly what it would on each cell alone and nothing on padding.

Attention over a packed row is given by the cumulative cell boundaries (``cu_seqlens``) and runs:

- on CUDA, in half precision, without attention dropout: ``torch.nn.attention.varlen.varlen_attn``
  (the flash kernel taking ``cu_seqlens``; CUDA-only in torch 2.13, it has no dropout);
- otherwise (CPU; fp32; attention dropout while training): one unmasked
  ``scaled_dot_product_attention`` per cell, which takes SDPA's fused kernels (and its dropout)
  and computes no cross-cell or padding scores; when all cells of a batch are short
  (< ``SHORT_CELLS`` tokens) they are re-padded for one SDPA call instead (attention only).
  The alternatives waste work: SDPA with a block-diagonal mask computes the whole T x T score matrix, and so does ``flex_attention`` with a
  document mask unless compiled (eager, it materialises the scores; compiled, it is the GPU option
  this module does not need while varlen_attn exists).

The function is registered with transformers' ``AttentionInterface`` under ``PACKED``; batches
without ``cu_seqlens`` (evaluation, padded batches) go to the stock SDPA function, so a model
switched to it behaves as before. It is a run-time setting only: ``save_pretrained`` writes a
plain BERT whose config asks for SDPA (``unpacked_for_saving``).

Masks are drawn on the padded batch before packing (``pack``), so a packed run masks exactly the
tokens the padded run masks and resumes bit-exactly like it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from cellfate.foundation.collator import IGNORE_INDEX

PACKED = "cellfate_packed"
# Off the varlen kernel, cells shorter than this (all of a batch) share one re-padded SDPA call.
SHORT_CELLS = 128


def pack(batch: dict[str, torch.Tensor], pad_id: int, multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """One row of every cell of a right-padded (masked) batch, end to end, and the cell boundaries.

    Returns ``input_ids``, ``labels``, ``position_ids`` and ``attention_mask`` (1 on cell tokens,
    which the loop counts) of shape (1, T) and ``cu_seqlens`` (int32, cells + 1, plus one filler
    segment when T is rounded up to ``multiple_of``). A batch without cells stays unpacked.
    """
    attention = batch["attention_mask"].bool()
    lengths = attention.sum(1)
    lengths = lengths[lengths > 0]
    if len(lengths) == 0:
        return dict(batch)
    total = int(lengths.sum())
    width = -(-total // multiple_of) * multiple_of
    ids = torch.full((1, width), pad_id, dtype=batch["input_ids"].dtype)
    ids[0, :total] = batch["input_ids"][attention]
    labels = torch.full((1, width), IGNORE_INDEX, dtype=torch.long)
    if "labels" in batch:
        labels[0, :total] = batch["labels"][attention]
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    starts = torch.repeat_interleave(bounds[:-1], lengths)
    positions = torch.zeros((1, width), dtype=torch.long)
    positions[0, :total] = torch.arange(total) - starts
    mask = torch.zeros((1, width), dtype=batch["attention_mask"].dtype)
    mask[0, :total] = 1
    if width > total:  # the filler is a segment of its own, so that every token belongs to one
        bounds = torch.cat([bounds, torch.tensor([width])])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "position_ids": positions,
        "cu_seqlens": bounds.to(torch.int32),
    }


def is_packed(batch: dict[str, torch.Tensor]) -> bool:
    return "cu_seqlens" in batch


def packed_kwargs(batch: dict[str, torch.Tensor], spans: bool = True) -> dict:
    """The model inputs of a packed host batch besides its tensors: the longest segment and, for the
    per-cell SDPA path, the cells' (start, end) read here on the host, before the move to the device
    (no device sync). Filler segments (no cell token) get no span. The varlen kernel needs no spans:
    leave them out there (``spans=False``), since ``torch.compile`` would specialise on them.
    """
    bounds = batch["cu_seqlens"].tolist()
    out: dict = {"max_seqlen": max(b - a for a, b in zip(bounds[:-1], bounds[1:]))}
    if spans:
        real = int(batch["attention_mask"].sum())
        out["spans"] = tuple((a, b) for a, b in zip(bounds[:-1], bounds[1:]) if a < real)
    return out


def takes_varlen(device: torch.device, half: bool, attention_dropout: float) -> bool:
    """Whether training batches go to the varlen flash kernel (else one SDPA call per cell)."""
    return device.type == "cuda" and half and attention_dropout == 0.0


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention within each cell of a packed row (query/key/value: (1, heads, T, head_dim)).

    Returns (1, T, heads, head_dim) as transformers' attention functions do.
    """
    cu_seqlens = kwargs.get("cu_seqlens")
    if cu_seqlens is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if query.shape[0] != 1:
        raise ValueError("packed attention takes one row of concatenated cells")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, heads, head_dim)
    if takes_varlen(query.device, query.dtype in (torch.float16, torch.bfloat16), dropout):
        from torch.nn.attention.varlen import varlen_attn

        m = kwargs["max_seqlen"]
        out = varlen_attn(q, k, v, cu_seqlens, cu_seqlens, m, m, scale=scaling)
        return out.unsqueeze(0), None
    if "spans" not in kwargs:
        raise ValueError("packed attention off the varlen kernel needs the cells' spans (packed_kwargs)")
    spans = kwargs["spans"]
    if max(end - start for start, end in spans) < SHORT_CELLS:
        return _repadded_attention(q, k, v, spans, dropout, scaling).unsqueeze(0), None
    out = torch.zeros_like(q)  # filler positions (if any) get zeros: finite, and nothing reads them
    for start, end in spans:
        cell = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (heads, length, head_dim)
        out[start:end] = F.scaled_dot_product_attention(*cell, dropout_p=dropout, scale=scaling).transpose(0, 1)
    return out.unsqueeze(0), None


def _repadded_attention(q, k, v, spans, dropout: float, scaling: float | None) -> torch.Tensor:
    """Short cells: one SDPA call on the cells re-padded (attention only), with the key padding masked.

    One call per cell costs more in call overhead than short cells save (``benchmarks/README.md``);
    the other layers still see no padding.
    """
    lengths = torch.tensor([end - start for start, end in spans], device=q.device)
    n, longest, real = len(spans), int(lengths.max()), spans[-1][1]
    offsets = torch.repeat_interleave(torch.arange(n, device=q.device) * longest - (lengths.cumsum(0) - lengths), lengths)
    slots = torch.arange(real, device=q.device) + offsets  # packed token -> row * longest + position
    keep = torch.arange(longest, device=q.device) < lengths[:, None]  # (cells, longest)

    def repad(t: torch.Tensor) -> torch.Tensor:
        grid = t.new_zeros(n * longest, *t.shape[1:])
        grid[slots] = t[:real]
        return grid.view(n, longest, *t.shape[1:]).transpose(1, 2)  # (cells, heads, longest, head_dim)

    grid = F.scaled_dot_product_attention(
        repad(q), repad(k), repad(v), attn_mask=keep[:, None, None, :], dropout_p=dropout, scale=scaling
    )
    out = torch.zeros_like(q)
    out[:real] = grid.transpose(1, 2).reshape(n * longest, *q.shape[1:])[slots]
    return out


def register() -> None:
    """Make ``PACKED`` an attention implementation transformers knows (idempotent)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(PACKED, packed_attention)
    AttentionMaskInterface.register(PACKED, sdpa_mask)  # padded batches get SDPA's masks


def use_packed_attention(model: torch.nn.Module) -> None:
    """Switch a ``BertForMaskedLM`` to the packed attention (padded batches still run SDPA)."""
    register()
    model.set_attn_implementation(PACKED)


@contextlib.contextmanager
def unpacked_for_saving(model: torch.nn.Module) -> Iterator[None]:
    """SDPA while the model is saved, so its config names no implementation outside transformers."""
    current = model.config._attn_implementation
    if current != PACKED:
        yield
        return
    model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        model.set_attn_implementation(current)
