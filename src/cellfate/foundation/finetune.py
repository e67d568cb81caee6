"""Cell-type classification: fine-tune the pretrained model, and measure it against two references.

As in Geneformer / Mouse-Geneformer: per organ (``group_by``, e.g. tissue) the cell types under
``min_fraction`` (0.5%) of that organ's cells are dropped, the remaining cells are split 80/20,
stratified by type, with a seed, and ``BertForSequenceClassification`` is initialised from the
pretrained weights (the classification head is new) and trained with nothing frozen: AdamW, LR
5e-5, linear warmup over 500 steps then linear decay, batch 12, batches grouped by length.

The numbers mean something only next to references measured on the same split in the same run:

* **baseline**: logistic regression on the PCA of log-normalised counts (the QC'd h5ad of each
  cell; PCA fitted on the training cells only);
* **kNN zero-shot**: k nearest neighbours (cosine) among the training cells, on frozen embeddings
  of the pretrained model -- what the model knows about cell types without any fine-tuning.

Metrics: accuracy, macro precision, macro recall, macro-F1 on the held-out 20%.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cellfate.errors import CellfateError
from cellfate.foundation.cells import TokenizedCells
from cellfate.foundation.embed import autocast
from cellfate.nn.device import resolve_device

log = logging.getLogger(__name__)

METHODS = ("cellfate_finetuned", "baseline_logreg_pca", "knn_frozen_embeddings")


@dataclass(frozen=True)
class FinetuneSettings:
    """The ``foundation.classify`` config block."""

    label: str = "cell_type"
    group_by: str | None = "tissue"
    min_fraction: float = 0.005
    min_cells: int = 5
    test_fraction: float = 0.2
    test_source: str | None = None  # cross-source transfer: train on the other sources, test on this one
    seed: int = 0
    lr: float = 5e-5
    warmup_steps: int = 500
    batch_size: int = 12
    epochs: float = 10.0
    weight_decay: float = 0.001
    max_cells: int | None = None
    max_tokens: int | None = None  # cells cut to their top genes (None: as tokenized)
    baseline_pcs: int = 50
    knn_k: int = 10
    layer: int = -1
    pooling: str = "auto"
    device: str = "auto"
    precision: str = "bf16"

    @classmethod
    def from_config(cls, spec: Mapping[str, object] | None) -> FinetuneSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec or {}) - known)
        if unknown:
            raise CellfateError(f"foundation.classify: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        settings = cls(**dict(spec or {}))
        if not 0 < settings.test_fraction < 1 or not 0 <= settings.min_fraction < 1:
            raise CellfateError("foundation.classify: test_fraction must lie in (0, 1) and min_fraction in [0, 1)")
        if settings.batch_size < 1 or settings.epochs <= 0 or settings.lr <= 0 or settings.warmup_steps < 0:
            raise CellfateError("foundation.classify: batch_size, epochs and lr must be positive, warmup_steps >= 0")
        return settings


# -- which cells, which split ----------------------------------------------------------------------
def filter_labels(
    obs: pd.DataFrame, label: str, group_by: str | None, min_fraction: float, min_cells: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """Cells to classify and a table of the dropped (group, type) pairs with their share.

    Within each group (organ), a type under ``min_fraction`` of the group's cells is dropped; then a
    type with fewer than ``min_cells`` cells in all is dropped (a stratified split needs several).
    Unlabelled cells (``unknown``, empty) never enter.
    """
    if label not in obs:
        raise CellfateError(f"the shards have no {label!r} column to classify (columns: {', '.join(obs.columns)})")
    if group_by and group_by not in obs:
        raise CellfateError(
            f"the shards have no {group_by!r} column to group cell types by (columns: {', '.join(obs.columns)})"
        )
    labels = obs[label].astype(str)
    keep = ~labels.isin(["", "unknown", "nan", "None"]).to_numpy()
    groups = obs[group_by].astype(str) if group_by else pd.Series("all", index=obs.index)
    share = pd.crosstab(groups[keep], labels[keep], normalize="index")
    small = share.stack()
    small = small[(small > 0) & (small < min_fraction)]
    dropped = [
        {"group": g, "cell_type": t, "fraction": float(f), "reason": f"under {min_fraction:.2%} of the group"}
        for (g, t), f in small.items()
    ]
    if len(small):
        pairs = set(small.index)
        keep &= ~np.array([(g, t) in pairs for g, t in zip(groups, labels)])
    counts = labels[keep].value_counts()
    for t in counts.index[counts < min_cells]:
        dropped.append(
            {
                "group": "all",
                "cell_type": t,
                "fraction": float(counts[t] / max(keep.sum(), 1)),
                "reason": f"fewer than {min_cells} cells",
            }
        )
        keep &= (labels != t).to_numpy()
    if len(set(labels[keep])) < 2:
        raise CellfateError(f"fewer than two cell types with enough cells to classify (of {labels.nunique()} labels)")
    return keep, pd.DataFrame(dropped, columns=["group", "cell_type", "fraction", "reason"])


def source_split(labels: np.ndarray, sources: np.ndarray, test_source: str) -> tuple[np.ndarray, np.ndarray]:
    """Train on every other source's cells, test on ``test_source``'s (types it alone holds are left out).

    What a user does with a model: apply it to a new dataset, with that lab's depth, capture
    efficiency and gene-specific detection bias; a random split hides those differences.
    """
    sources = np.asarray(sources).astype(str)
    if test_source not in set(sources):
        raise CellfateError(f"foundation.classify.test_source {test_source!r} is not among the sources "
                            f"{', '.join(sorted(set(sources)))}")
    train = np.flatnonzero(sources != test_source)
    test = np.flatnonzero((sources == test_source) & np.isin(labels, labels[train]))
    if len(train) == 0 or len(test) == 0:
        raise CellfateError(f"cross-source split on {test_source!r} leaves no training or no test cell")
    unseen = sorted(set(labels[sources == test_source]) - set(labels[train]))
    if unseen:
        log.warning("test source %s: cell types absent from training left out: %s", test_source, ", ".join(unseen))
    return train, test


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified (train, test) positions."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(labels))
    train, test = train_test_split(positions, test_size=test_fraction, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(test)


def scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 (classes of the true labels)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = sorted(set(y_true))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
    }


# -- the fine-tuned model ------------------------------------------------------------------------
def _classifier_model(model_dir: str | os.PathLike[str], classes: list[str], seed: int):
    """(``BertForSequenceClassification`` with a new seeded head over ``classes``, the model's vocabulary)."""
    from transformers import BertForSequenceClassification

    from cellfate.foundation.config import check_vocabulary
    from cellfate.foundation.vocab import load_token_dictionary

    vocab = load_token_dictionary(Path(model_dir) / "token_dictionary.json")
    torch.manual_seed(seed)  # the new classification head
    model = BertForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
        attn_implementation="sdpa",
    )
    check_vocabulary(model.config, vocab, model_dir)
    return model, vocab


def train_classifier(
    model_dir: str | os.PathLike[str],
    cells: TokenizedCells,
    y: np.ndarray,
    classes: list[str],
    train_idx: np.ndarray,
    settings: FinetuneSettings,
) -> torch.nn.Module:
    """``BertForSequenceClassification`` from the pretrained weights, trained on ``train_idx``."""
    from cellfate.foundation.collator import MaskingCollator
    from cellfate.foundation.optim import build_optimizer, build_scheduler
    from cellfate.foundation.sampler import LengthGroupedBatchSampler

    device = resolve_device(settings.device)
    model, vocab = _classifier_model(model_dir, classes, settings.seed)
    model.to(device).train()
    collator = MaskingCollator(vocab, model.config.max_position_embeddings)
    sampler = LengthGroupedBatchSampler(
        cells.lengths, settings.batch_size, indices=train_idx, seed=settings.seed, megabatch_batches=50
    )
    total = max(1, math.ceil(settings.epochs * len(sampler)))
    optimizer = build_optimizer(model, settings.lr, settings.weight_decay, fused=device.type == "cuda")
    scheduler = build_scheduler(optimizer, "linear", settings.warmup_steps, total)
    targets = torch.as_tensor(y, dtype=torch.long)
    step, epoch = 0, 0
    bar = tqdm(total=total, desc="fine-tune", unit="step", disable=None)  # None: no bar in a log file
    while step < total:
        sampler.set_epoch(epoch)
        loss_sum, n_seen = 0.0, 0
        for batch_idx in sampler:
            if step >= total:
                break
            batch = collator.pad(cells.rows(batch_idx))
            with autocast(device, settings.precision):
                out = model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    labels=targets[batch_idx].to(device),
                )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += out.loss.item() * len(batch_idx)
            n_seen += len(batch_idx)
            step += 1
            bar.update(1)
        log.info("fine-tune epoch %d: step %d/%d, mean loss %.4f", epoch + 1, step, total, loss_sum / max(n_seen, 1))
        epoch += 1
    bar.close()
    return model.eval()


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    vocab,
    cells: TokenizedCells,
    indices: np.ndarray,
    *,
    batch_size: int = 32,
    precision: str = "fp32",
) -> np.ndarray:
    """Class index of each cell in ``indices`` (longest first in batches, returned in their order)."""
    from cellfate.foundation.collator import MaskingCollator

    device = next(model.parameters()).device
    collator = MaskingCollator(vocab, model.config.max_position_embeddings)
    order = indices[np.argsort(-cells.lengths[indices], kind="stable")]
    out = {}
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        batch = collator.pad(cells.rows(chosen))
        with autocast(device, precision):
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits
        out.update(zip(chosen.tolist(), logits.argmax(-1).cpu().tolist()))
    return np.array([out[int(i)] for i in indices], dtype=np.int64)


def save_classifier(
    model: torch.nn.Module,
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    info: Mapping[str, object],
) -> None:
    """``save_pretrained`` + the token dictionary + ``labels.json`` (classes, dropped types, settings), atomically."""
    from cellfate.io import atomic_path

    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        shutil.copyfile(Path(model_dir) / "token_dictionary.json", Path(tmp) / "token_dictionary.json")
        (Path(tmp) / "labels.json").write_text(json.dumps(info, indent=1, default=str) + "\n")


# -- the references --------------------------------------------------------------------------------
def baseline_predictions(
    counts, train: np.ndarray, test: np.ndarray, y: np.ndarray, *, n_pcs: int = 50, seed: int = 0
) -> np.ndarray:
    """Logistic regression on the PCA (fitted on ``train``) of log-normalised counts (cells x genes, CSR)."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    X = sp.csr_matrix(counts, dtype=np.float64)
    X = sp.diags(1e4 / np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1)) @ X
    X.data = np.log1p(X.data)
    n_pcs = max(1, min(n_pcs, len(train) - 1, X.shape[1] - 1))
    pca = PCA(n_components=n_pcs, svd_solver="arpack", random_state=seed).fit(X[train])
    classifier = LogisticRegression(max_iter=2000).fit(pca.transform(X[train]), y[train])
    return classifier.predict(pca.transform(X[test]))


def knn_predictions(
    embeddings: np.ndarray, train: np.ndarray, test: np.ndarray, y: np.ndarray, k: int = 10
) -> np.ndarray:
    """Zero-shot: majority label of the ``k`` nearest training cells (cosine) on frozen embeddings."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine")
    return knn.fit(embeddings[train], y[train]).predict(embeddings[test])
