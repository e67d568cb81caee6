"""Cell embeddings from the pretrained model: one vector per cell from a chosen hidden layer.

A cell's embedding is the mean of its gene tokens' hidden states at ``layer`` (padding and special
tokens left out), or the ``<cls>`` token's hidden state when the dictionary has one (v2 style)
and ``pooling`` is ``auto`` or ``cls``. Layers count like ``output_hidden_states``: 0 is the token
embedding, ``-1`` (the default) the last layer.

Only what the embedding needs is computed: the masked-LM head (a vocabulary-wide matrix product
per token, as large as the whole encoder for a 56k-gene vocabulary) is skipped and, for an inner
layer, so are the layers above it. Cells are run longest first in batches of similar length, so
padding costs little and an out-of-memory error shows in the first batch; a batch without
padding is run without an attention mask, which lets PyTorch use its fused attention kernel.

The same :class:`Embedder` serves classification (kNN on frozen embeddings), the state
embeddings of in silico perturbation, and the cross-species path.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cellfate.errors import CellfateError
from cellfate.foundation.collator import MaskingCollator
from cellfate.foundation.vocab import CLS, EOS, MASK, PAD, TokenDictionary, load_token_dictionary
from cellfate.nn.device import resolve_device

log = logging.getLogger(__name__)

POOLINGS = ("auto", "mean", "cls")
PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA when asked; the CPU always computes in fp32."""
    if precision not in PRECISIONS:
        raise CellfateError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Pretrained:
    """A loaded model directory: the masked-LM model (eval mode, on ``device``) and its dictionary."""

    model: torch.nn.Module
    vocab: TokenDictionary
    device: torch.device
    path: str

    @property
    def config(self):
        return self.model.config


def load_pretrained(model_dir: str | os.PathLike[str], device: str = "auto") -> Pretrained:
    """``save_pretrained`` directory of a BertForMaskedLM with ``token_dictionary.json`` beside the weights."""
    from transformers import BertForMaskedLM

    from cellfate.foundation.config import check_vocabulary

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise CellfateError("not a saved model (no config.json); pretrain first", model_dir)
    vocab = load_token_dictionary(model_dir / "token_dictionary.json")
    model = BertForMaskedLM.from_pretrained(model_dir, attn_implementation="sdpa")
    check_vocabulary(model.config, vocab, model_dir)
    where = resolve_device(device)
    model.to(where).eval()
    log.info(
        "loaded %s (%d layers, hidden %d, vocabulary %d) on %s",
        model_dir,
        model.config.num_hidden_layers,
        model.config.hidden_size,
        vocab.vocab_size,
        where,
    )
    return Pretrained(model, vocab, where, str(model_dir))


def layer_index(num_layers: int, layer: int) -> int:
    """``output_hidden_states`` index of ``layer`` (negative from the end); out of range is a user error."""
    index = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= index <= num_layers:
        raise CellfateError(
            f"layer {layer} does not exist: the model has hidden states 0..{num_layers} (or -1..-{num_layers + 1})"
        )
    return index


def encoder_upto(bert: torch.nn.Module, index: int) -> torch.nn.Module:
    """A view of ``bert`` (a BertModel) whose last hidden state is hidden state ``index``; weights shared."""
    if index == len(bert.encoder.layer):
        return bert
    encoder = copy.copy(bert.encoder)
    encoder._modules = dict(bert.encoder._modules)
    encoder.layer = torch.nn.ModuleList(list(bert.encoder.layer)[:index])
    short = copy.copy(bert)
    short._modules = dict(bert._modules)
    short.encoder = encoder
    return short


def pooling_mode(vocab: TokenDictionary, requested: str = "auto") -> str:
    """``cls`` when the dictionary has ``<cls>`` (and mean was not asked for), else ``mean``."""
    if requested not in POOLINGS:
        raise CellfateError(f"pooling must be one of {', '.join(POOLINGS)}, got {requested!r}")
    has_cls = CLS in vocab.token_to_id
    if requested == "cls" and not has_cls:
        raise CellfateError(
            f"pooling 'cls' needs a <cls> token, but the dictionary {vocab.path} has none (a v1 dictionary)"
        )
    return "cls" if requested == "cls" or (requested == "auto" and has_cls) else "mean"


class Embedder:
    """Runs padded token batches through the encoder and pools one vector per sequence."""

    def __init__(
        self,
        pretrained: Pretrained,
        *,
        layer: int = -1,
        pooling: str = "auto",
        batch_size: int = 32,
        precision: str = "fp32",
    ) -> None:
        if batch_size < 1:
            raise CellfateError(f"batch_size must be at least 1, got {batch_size}")
        config = pretrained.config
        self.layer = layer_index(config.num_hidden_layers, layer)
        self.encoder = encoder_upto(pretrained.model.bert, self.layer)
        self.vocab = pretrained.vocab
        self.device = pretrained.device
        self.mode = pooling_mode(pretrained.vocab, pooling)
        self.batch_size = batch_size
        self.precision = precision
        autocast(self.device, precision)  # validates the name
        self.max_length = config.max_position_embeddings
        self.pad_id = pretrained.vocab.pad_id
        self.cls_id = pretrained.vocab.token_to_id.get(CLS, -1)
        ids = [pretrained.vocab.token_to_id[t] for t in (PAD, MASK, CLS, EOS) if t in pretrained.vocab.token_to_id]
        self.special = torch.tensor(ids, dtype=torch.long, device=self.device)
        self.collator = MaskingCollator(pretrained.vocab, self.max_length)

    @torch.inference_mode()
    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Hidden states (batch, length, hidden) at the chosen layer, in fp32."""
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: the fused attention kernel, and no mask to build
        with autocast(self.device, self.precision):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state.float()

    def gene_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """True at gene tokens: not padding, not a special token."""
        genes = ~torch.isin(input_ids, self.special)
        return genes if attention_mask is None else genes & attention_mask.bool()

    def pool(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """One vector per sequence: the ``<cls>`` state or the mean over gene tokens."""
        if self.mode == "cls":
            if not bool((input_ids[:, 0] == self.cls_id).all()):
                raise CellfateError(
                    "pooling 'cls' needs cells that start with <cls>; these were tokenized without it (v1)"
                )
            return hidden[:, 0]
        weights = self.gene_mask(input_ids, attention_mask).to(hidden.dtype)
        return (hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled embeddings (batch, hidden) of a padded batch already on the device."""
        return self.pool(self.hidden(input_ids, attention_mask), input_ids, attention_mask)

    def batch(self, rows: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` on the device (vocabulary range checked)."""
        padded = self.collator.pad(rows)
        return padded["input_ids"].to(self.device), padded["attention_mask"].to(self.device)

    def embed(self, rows: Sequence[np.ndarray], *, desc: str = "embed") -> np.ndarray:
        """Embeddings (cells, hidden) of token id arrays, computed longest first, returned in input order."""
        lengths = np.array([len(r) for r in rows])
        order = np.argsort(-lengths, kind="stable")
        out = np.zeros((len(rows), self.encoder.config.hidden_size), dtype=np.float32)
        starts = range(0, len(rows), self.batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", disable=True if len(starts) < 2 else None):
            chosen = order[start : start + self.batch_size]
            ids, attention = self.batch([rows[i] for i in chosen])
            out[chosen] = self(ids, attention).cpu().numpy()
        return out


def write_embeddings(
    model_dir: str,
    shards: Sequence[str],
    token_dictionary: str,
    out_h5ad: str,
    *,
    layer: int = -1,
    pooling: str = "auto",
    batch_size: int = 32,
    device: str = "auto",
    precision: str = "bf16",
    max_cells: int | None = None,
    max_tokens: int | None = None,
    seed: int = 0,
    umap_neighbors: int = 15,
) -> None:
    """Rule embed_cells: every tokenized cell (or ``max_cells`` of them) -> ``obsm['X_cellfate']`` and a 2-D
    UMAP layout ``obsm['X_umap']`` of those embeddings, with the cells' attributes in ``obs``."""
    import anndata as ad

    from cellfate.foundation.cells import check_dictionaries, check_token_range, cut_to, load_cells
    from cellfate.umap_layout import umap_layout
    from cellfate.io import write_h5ad

    check_dictionaries(token_dictionary, Path(model_dir) / "token_dictionary.json")
    pretrained = load_pretrained(model_dir, device)
    cells = load_cells(shards, max_cells=max_cells, seed=seed)
    check_token_range(cells, pretrained.vocab.vocab_size, token_dictionary)
    cells = cut_to(cells, max_tokens, pretrained.vocab.token_to_id)
    embedder = Embedder(pretrained, layer=layer, pooling=pooling, batch_size=batch_size, precision=precision)
    X = embedder.embed(cells.rows())
    obs = cells.obs.drop(columns=["shard"]).astype({"shard_row": int})
    obs.index = [f"{s}:{r}" for s, r in zip(obs["sample"], obs["shard_row"])]
    adata = ad.AnnData(obs=obs)
    adata.obsm["X_cellfate"] = X
    adata.obsm["X_umap"] = umap_layout(X, n_neighbors=umap_neighbors, seed=seed)
    adata.uns["cellfate_embedding"] = {
        "model": str(model_dir),
        "layer": int(embedder.layer),
        "pooling": embedder.mode,
        "device": str(pretrained.device),
        "precision": precision,
        "max_tokens": int(max_tokens or 0),
    }
    write_h5ad(adata, out_h5ad)
    log.info("wrote %d x %d embeddings (layer %d, %s pooling) to %s", *X.shape, embedder.layer, embedder.mode, out_h5ad)
