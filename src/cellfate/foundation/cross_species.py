"""Rule cross_species: converted human samples through the mouse model, with what was kept and lost.

A human sample reaches this rule after ortholog conversion (:mod:`cellfate.foundation.orthologs`),
the ordinary QC and tokenization with the corpus dictionary. Here its cells are classified by the
fine-tuned mouse classifier and, zero-shot, by kNN label transfer from the mouse cells' embeddings
(``embeddings.h5ad``). The summary row per sample says how much survived each step -- genes and
counts through the orthologs, cells through QC and tokenization -- and how well the cell types
come back, against the sample's own labels (cells of types the mouse classifier never saw are
counted apart, not as errors).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cellfate.errors import CellfateError
from cellfate.foundation.cells import TokenizedCells, check_dictionaries, check_token_range, cut_to, load_cells
from cellfate.foundation.finetune import scores
from cellfate.foundation.orthologs import summary_row
from cellfate.io import write_table

log = logging.getLogger(__name__)


def _classifier(classifier_dir: str, device: str):
    """The fine-tuned model, its dictionary and the token cut it was trained with (labels.json)."""
    import json

    from transformers import BertForSequenceClassification

    from cellfate.foundation.vocab import load_token_dictionary
    from cellfate.nn.device import resolve_device

    if not (Path(classifier_dir) / "config.json").is_file():
        raise CellfateError("not a saved classifier (no config.json)", classifier_dir)
    vocab = load_token_dictionary(Path(classifier_dir) / "token_dictionary.json")
    model = BertForSequenceClassification.from_pretrained(classifier_dir, attn_implementation="sdpa")
    labels = Path(classifier_dir) / "labels.json"
    cut = json.loads(labels.read_text()).get("settings", {}).get("max_tokens") if labels.is_file() else None
    return model.to(resolve_device(device)).eval(), vocab, cut


def _knn_transfer(reference_h5ad: str, model_dir: str, cells, device: str, k: int) -> np.ndarray:
    """Cell types of the ``k`` nearest mouse cells (cosine), embedded exactly as the reference was."""
    import anndata as ad
    from sklearn.neighbors import KNeighborsClassifier

    from cellfate.foundation.embed import Embedder, load_pretrained

    reference = ad.read_h5ad(reference_h5ad)
    how = reference.uns.get("cellfate_embedding", {})
    pretrained = load_pretrained(model_dir, device)
    embedder = Embedder(
        pretrained,
        layer=int(how.get("layer", -1)),
        pooling=str(how.get("pooling", "auto")),
        precision=str(how.get("precision", "fp32")),
    )
    cells = cut_to(cells, int(how.get("max_tokens", 0)) or None, pretrained.vocab.token_to_id)
    X = embedder.embed(cells.rows(), desc="embed human cells")
    labels = reference.obs["cell_type"].astype(str).to_numpy()
    knn = KNeighborsClassifier(n_neighbors=min(k, len(labels)), metric="cosine")
    return knn.fit(reference.obsm["X_cellfate"], labels).predict(X)


def _summary_row(
    sample: str,
    ortholog_summary: str,
    qc_table: str,
    cells: TokenizedCells,
    truth: np.ndarray,
    known: np.ndarray,
    predictions: dict[str, np.ndarray],
) -> dict[str, object]:
    """What survived each step (genes, counts, cells) and both methods' scores on the known types."""
    qc_row = pd.read_csv(qc_table, sep="\t").iloc[0]
    row = {
        "sample": sample,
        **summary_row(ortholog_summary),
        "cells_in": int(qc_row["cells"]),
        "cells_qc_pass": int(qc_row["cells_pass"]),
        "cells_tokenized": len(cells),
        "median_tokens": float(np.median(cells.lengths)),
        "cells_of_known_types": int(known.sum()),
    }
    for method, predicted in predictions.items():
        metric = scores(truth[known], predicted[known]) if known.any() else {}
        row.update({f"{method}_{k}": v for k, v in metric.items()})
    log.info(
        "%s: %.1f%% of genes, %.1f%% of counts kept; %d cells tokenized; fine-tuned macro-F1 %s, kNN macro-F1 %s",
        sample,
        100 * row["fraction_genes_kept"],
        100 * row["fraction_counts_kept"],
        len(cells),
        f"{row.get('finetuned_macro_f1', float('nan')):.3f}",
        f"{row.get('knn_macro_f1', float('nan')):.3f}",
    )
    return row


def cross_species(
    samples: Sequence[str],
    shards: Sequence[str],
    orthologs: Sequence[str],
    qc_tables: Sequence[str],
    model_dir: str,
    classifier_dir: str,
    token_dictionary: str,
    reference_h5ad: str,
    *,
    out_summary: str,
    out_predictions: str,
    device: str = "auto",
    knn_k: int = 10,
) -> pd.DataFrame:
    """One summary row per converted sample and the per-cell predictions of both methods.

    Each method sees the cells cut as its own inputs were: the classifier as in its ``labels.json``,
    the kNN as the reference embeddings (``uns['cellfate_embedding']['max_tokens']``).
    """
    from cellfate.foundation.finetune import predict

    check_dictionaries(token_dictionary, Path(classifier_dir) / "token_dictionary.json")
    model, vocab, cut = _classifier(classifier_dir, device)
    classes = [model.config.id2label[i] for i in range(model.config.num_labels)]
    rows, tables = [], []
    for sample, shard, ortho, qc in zip(samples, shards, orthologs, qc_tables, strict=True):
        cells = load_cells([shard])
        check_token_range(cells, vocab.vocab_size, token_dictionary)
        truth = cells.obs["cell_type"].astype(str).to_numpy()
        finetuned = np.asarray(classes)[
            predict(model, vocab, cut_to(cells, cut, vocab.token_to_id), np.arange(len(cells)))
        ]
        knn = _knn_transfer(reference_h5ad, model_dir, cells, device, knn_k)
        known = np.isin(truth, classes)
        rows.append(_summary_row(sample, ortho, qc, cells, truth, known, {"finetuned": finetuned, "knn": knn}))
        per_cell = {"shard_row": cells.obs["shard_row"].to_numpy(), "true": truth, "known_type": known}
        tables.append(pd.DataFrame({"sample": sample, **per_cell, "finetuned": finetuned, "knn": knn}))
    summary = pd.DataFrame(rows)
    write_table(summary, out_summary)
    write_table(pd.concat(tables, ignore_index=True), out_predictions)
    return summary
