"""Did pretraining learn? Two measures written beside the held-out loss (``heldout_loss.tsv``).

- The held-out masked-gene loss against the **unigram cross-entropy**: the loss of a model that
  ignores the cell and predicts every masked gene from the training cells' gene frequencies. A
  model that only learned which genes are common sits at it; the gap below it is what the
  context (the rest of the cell) taught. A uniform guess over the vocabulary is a weaker baseline:
  rank-value encoding makes the gene frequencies non-uniform, and the unigram model gets that free.
- **Zero-shot kNN accuracy** of the cell types from the pretrained embeddings (k = 10, cosine,
  5-fold): the model never saw a label, so accuracy well above the majority share means its
  embeddings separate cell identities. Its negative control is the same kNN on an untrained model
  of the same shape (seeded): on a corpus with strong cell-type programs even random token
  embeddings, averaged over a cell's top genes, separate types (0.87-0.98 on the demo corpus), so
  kNN alone does not prove learning; the loss gap does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cellfate.errors import CellfateError


def unigram_cross_entropy(train_rows: Sequence[np.ndarray], heldout_rows: Sequence[np.ndarray],
                          special_ids: Sequence[int], vocab_size: int) -> float:
    """Cross-entropy (nats) of held-out gene tokens under the training cells' gene frequencies.

    Add-one-half smoothing over the gene vocabulary, so a gene unseen in training costs a finite
    amount, as it does for the model.
    """
    special = np.asarray(list(special_ids))
    counts = np.full(vocab_size, 0.5)
    counts[special] = 0.0
    for row in train_rows:
        np.add.at(counts, row[~np.isin(row, special)], 1.0)
    logp = np.log(counts / counts.sum(), out=np.full(vocab_size, -np.inf), where=counts > 0)
    held = np.concatenate([r[~np.isin(r, special)] for r in heldout_rows]) if len(heldout_rows) else np.array([], int)
    if held.size == 0:
        return float("nan")
    return float(-logp[held].mean())


def knn_cv_accuracy(embeddings: np.ndarray, labels: Sequence[str], k: int = 10, folds: int = 5, seed: int = 0) -> float:
    """Mean accuracy of a cosine kNN over ``folds`` shuffled folds (each cell predicted once)."""
    from sklearn.model_selection import KFold

    from cellfate.foundation.finetune import knn_predictions

    y = np.asarray(labels).astype(str)
    if len(y) < folds:
        raise CellfateError(f"kNN accuracy needs at least {folds} cells, got {len(y)}")
    hits = np.zeros(len(y), dtype=bool)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(embeddings):
        hits[test] = knn_predictions(embeddings, train, test, y, k) == y[test]
    return float(hits.mean())


def majority_share(labels: Sequence[str]) -> float:
    """Accuracy of always guessing the commonest label: the chance level kNN must beat."""
    values = pd.Series(np.asarray(labels).astype(str)).value_counts(normalize=True)
    return float(values.iloc[0]) if len(values) else float("nan")


def untrained_copy(pretrained, seed: int):
    """The same architecture and dictionary, freshly initialised from ``seed``: the kNN's control."""
    import dataclasses

    import torch

    from cellfate.foundation.config import build_model

    torch.manual_seed(seed)
    model = build_model(pretrained.model.config).to(pretrained.device).eval()
    return dataclasses.replace(pretrained, model=model)


def learning_table(model_dir: str | os.PathLike[str], shards: Sequence[str], heldout_tsv: str | os.PathLike[str], *,
                   heldout_fraction: float, heldout_max_cells: int, seed: int, label: str = "cell_type",
                   knn_k: int = 10, max_cells: int = 20_000, knn_shards: Sequence[str] | None = None) -> pd.DataFrame:
    """``heldout_loss.tsv`` with the unigram baseline, the gap below it and the zero-shot kNN added.

    The held-out cells are drawn exactly as the trainer drew them (same shards, lengths, fraction,
    cap, seed), so the unigram model is fit on the same training cells and scored on the same
    cells. The kNN reads ``knn_shards`` (default ``shards``).
    """
    from cellfate.foundation.cells import load_cells
    from cellfate.foundation.data import load_corpus, split_heldout
    from cellfate.foundation.embed import Embedder, load_pretrained

    table = pd.read_csv(heldout_tsv, sep="\t")
    corpus = load_corpus(list(shards))
    train_idx, held_idx = split_heldout(corpus.lengths, heldout_fraction, heldout_max_cells, seed)
    pretrained = load_pretrained(model_dir, "cpu")
    vocab = pretrained.vocab
    unigram = unigram_cross_entropy(corpus.__getitems__(train_idx.tolist()), corpus.__getitems__(held_idx.tolist()),
                                    vocab.special_ids, vocab.vocab_size)
    cells = load_cells(list(knn_shards or shards), attributes=(label,), max_cells=max_cells, seed=seed)
    embeddings = Embedder(pretrained).embed(cells.rows(), desc="kNN embeddings")
    y = cells.obs[label].astype(str).to_numpy()
    untrained = Embedder(untrained_copy(pretrained, seed)).embed(cells.rows(), desc="kNN control")
    table["unigram_cross_entropy"] = unigram
    table["nats_below_unigram"] = unigram - table["heldout_mlm_loss"]
    table["knn_accuracy"] = knn_cv_accuracy(embeddings, y, knn_k)
    table["knn_accuracy_untrained"] = knn_cv_accuracy(untrained, y, knn_k)
    table["knn_majority_share"] = majority_share(y)
    table["knn_cells"] = len(y)
    return table
