"""Rule classify_cells: fine-tuned classifier, baseline and zero-shot kNN on one split, one table.

The baseline needs the counts of the very cells the model sees. Shards hold the QC-passed cells of
a sample in file order, minus the cells with no gene in the vocabulary (the tokenizer drops them);
:func:`qc_counts` rebuilds that selection from the QC'd h5ad, checks it against the shard (same
number of cells, same cell types in the same order) and refuses to guess when they disagree.
The baseline sees every gene of those cells; with ``max_tokens`` set, the model sees each cell's
top genes only (the demo's CPU setting), which is part of what is being compared.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.errors import CellfateError
from cellfate.foundation.cells import (
    ATTRIBUTES,
    TokenizedCells,
    check_dictionaries,
    check_token_range,
    cut_to,
    load_cells,
)
from cellfate.foundation.data import lengths_path
from cellfate.foundation.finetune import (
    METHODS,
    FinetuneSettings,
    baseline_predictions,
    filter_labels,
    knn_predictions,
    predict,
    save_classifier,
    scores,
    source_split,
    stratified_split,
    train_classifier,
)
from cellfate.io import write_table

log = logging.getLogger(__name__)


def _strip_version(ids: Sequence[str]) -> list[str]:
    return [str(g).split(".")[0] if str(g).startswith("ENS") else str(g) for g in ids]


def shard_rows_in_h5ad(
    h5ad: str | os.PathLike[str], gene_tokens: Mapping[str, int], n_rows: int, cell_types: pd.Series | None = None
) -> tuple[np.ndarray, object]:
    """Rows of the QC'd h5ad that became the shard's rows 0..n_rows-1, and the AnnData."""
    import anndata as ad

    adata = ad.read_h5ad(h5ad)
    if "filter_pass" not in adata.obs:
        raise CellfateError("QC'd h5ad has no filter_pass column", h5ad)
    known = np.flatnonzero(pd.Index(_strip_version(adata.var_names)).isin(list(gene_tokens)))
    X = sp.csr_matrix(adata.X)
    sub = X[:, known]
    expressed = np.asarray((sub > 0).sum(axis=1)).ravel() > 0
    rows = np.flatnonzero(adata.obs["filter_pass"].to_numpy(bool) & expressed)
    if len(rows) != n_rows:
        raise CellfateError(
            f"its QC-passed cells with a known gene ({len(rows)}) do not match the {n_rows} cells of the "
            "tokenized shard: was the shard tokenized from another version of this file?",
            h5ad,
        )
    if cell_types is not None and "cell_type" in adata.obs:
        mine = adata.obs["cell_type"].astype(str).to_numpy()[rows[cell_types.index.to_numpy()]]
        if not np.array_equal(mine, cell_types.astype(str).to_numpy()):
            raise CellfateError(
                "cell types differ from the tokenized shard's: shard and h5ad are not the same cells", h5ad
            )
    return rows, adata


def qc_counts(
    cells: TokenizedCells, qc_h5ads: Sequence[str | os.PathLike[str]], gene_tokens: Mapping[str, int]
) -> sp.csr_matrix:
    """Raw counts (cells x union of genes, CSR) of ``cells``, in their order, from the QC'd h5ads."""
    by_name = {(Path(p).parent.name, Path(p).stem): str(p) for p in qc_h5ads}
    blocks, genes_of = {}, {}
    for shard, group in cells.obs.groupby("shard", sort=False):
        key = (str(group["source"].iloc[0]), str(group["sample"].iloc[0]))
        if key not in by_name:
            raise CellfateError(
                f"no QC'd h5ad for sample {key[1]} of source {key[0]} among the {len(qc_h5ads)} given", shard
            )
        n_rows = len(np.load(lengths_path(shard)))
        types = pd.Series(group["cell_type"].to_numpy(), index=group["shard_row"].to_numpy())
        rows, adata = shard_rows_in_h5ad(by_name[key], gene_tokens, n_rows, types)
        blocks[shard] = (group.index.to_numpy(), sp.csr_matrix(adata.X)[rows[group["shard_row"].to_numpy()]])
        genes_of[shard] = _strip_version(adata.var_names)
    genes = pd.Index(sorted(set().union(*genes_of.values())))
    parts = []
    for shard, (positions, block) in blocks.items():
        columns = genes.get_indexer(genes_of[shard])
        coo = block.tocoo()
        parts.append((positions[coo.row], columns[coo.col], coo.data))
    row, col, data = (np.concatenate(x) for x in zip(*parts))
    return sp.csr_matrix((data.astype(np.float64), (row, col)), shape=(len(cells), len(genes)))


def _cells_to_classify(model_dir: str, shards: Sequence[str], token_dictionary: str, s: FinetuneSettings):
    """(pretrained model, labelled cells cut to the token budget, table of the dropped types)."""
    from cellfate.foundation.embed import load_pretrained

    attributes = list(dict.fromkeys([*ATTRIBUTES, s.label, *([s.group_by] if s.group_by else [])]))
    cells = load_cells(shards, attributes=attributes, max_cells=s.max_cells, seed=s.seed)
    pretrained = load_pretrained(model_dir, s.device)
    check_token_range(cells, pretrained.vocab.vocab_size, token_dictionary)
    cells = cut_to(cells, s.max_tokens, pretrained.vocab.token_to_id)
    keep, dropped = filter_labels(cells.obs, s.label, s.group_by, s.min_fraction, s.min_cells)
    if len(dropped):
        log.info(
            "dropped cell types: %s", "; ".join(f"{r.group}/{r.cell_type} ({r.reason})" for r in dropped.itertuples())
        )
    return pretrained, cells.subset(np.flatnonzero(keep)), dropped


def _split(cells: TokenizedCells, labels: np.ndarray, s: FinetuneSettings) -> tuple[np.ndarray, np.ndarray, str]:
    """(train, test, how): by source when ``test_source`` is set, else stratified at random."""
    if s.test_source:
        train, test = source_split(labels, cells.obs["source"].astype(str).to_numpy(), s.test_source)
        return train, test, f"train: other sources, test: {s.test_source}"
    train, test = stratified_split(labels, s.test_fraction, s.seed)
    return train, test, f"stratified random {1 - s.test_fraction:.0%}/{s.test_fraction:.0%}"


def _reference_predictions(
    pretrained, cells: TokenizedCells, qc_h5ads: Sequence[str], y: np.ndarray, train: np.ndarray,
    test: np.ndarray, s: FinetuneSettings,
) -> dict[str, np.ndarray]:
    """The baseline's and the zero-shot kNN's predictions of the test cells."""
    from cellfate.foundation.embed import Embedder

    counts = qc_counts(cells, qc_h5ads, pretrained.vocab.token_to_id)
    predictions = {
        "baseline_logreg_pca": baseline_predictions(counts, train, test, y, n_pcs=s.baseline_pcs, seed=s.seed)
    }
    embedder = Embedder(pretrained, layer=s.layer, pooling=s.pooling, precision=s.precision)
    frozen = embedder.embed(cells.rows(), desc="frozen embeddings")
    predictions["knn_frozen_embeddings"] = knn_predictions(frozen, train, test, y, s.knn_k)
    return predictions


def _write_results(
    cells: TokenizedCells, classes: list[str], y: np.ndarray, train: np.ndarray, test: np.ndarray,
    predictions: Mapping[str, np.ndarray], split: str, label: str, out_metrics: str, out_predictions: str,
) -> pd.DataFrame:
    """``metrics.tsv`` (one row per method) and ``predictions.tsv`` (one row per test cell)."""
    truth = [classes[i] for i in y[test]]
    shared = {"n_train": len(train), "n_test": len(test), "n_classes": len(classes), "split": split}
    metrics = pd.DataFrame(
        [{"method": m, **scores(truth, [classes[i] for i in predictions[m]]), **shared} for m in METHODS]
    )
    write_table(metrics, out_metrics)
    table = cells.obs.iloc[test][["source", "sample", "shard_row", label]].rename(columns={label: "true"})
    for method in METHODS:
        table[method] = [classes[i] for i in predictions[method]]
    write_table(table.reset_index(drop=True), out_predictions)
    return metrics


def classify(
    model_dir: str,
    shards: Sequence[str],
    token_dictionary: str,
    qc_h5ads: Sequence[str],
    *,
    out_model: str,
    out_metrics: str,
    out_predictions: str,
    settings: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """Fine-tune, predict the held-out cells with all three methods, write model, metrics and predictions."""
    s = FinetuneSettings.from_config(settings)
    check_dictionaries(token_dictionary, Path(model_dir) / "token_dictionary.json")
    pretrained, cells, dropped = _cells_to_classify(model_dir, shards, token_dictionary, s)
    labels = cells.obs[s.label].astype(str).to_numpy()
    classes = sorted(set(labels))
    y = np.searchsorted(classes, labels)
    train, test, split = _split(cells, labels, s)
    log.info("%d cells, %d types: %d train / %d test (%s)", len(cells), len(classes), len(train), len(test), split)
    predictions = _reference_predictions(pretrained, cells, qc_h5ads, y, train, test, s)
    vocab = pretrained.vocab
    del pretrained  # the frozen model is not needed while fine-tuning
    model = train_classifier(model_dir, cells, y, classes, train, s)
    predictions["cellfate_finetuned"] = predict(model, vocab, cells, test, precision=s.precision)
    info = {
        "classes": classes,
        "label": s.label,
        "dropped": dropped.to_dict("records"),
        "settings": asdict(s),
        "pretrained_model": str(model_dir),
        "n_train": int(len(train)),
        "n_test": int(len(test)),
    }
    save_classifier(model, model_dir, out_model, info)
    metrics = _write_results(cells, classes, y, train, test, predictions, split, s.label, out_metrics, out_predictions)
    log.info("held-out macro-F1: %s", ", ".join(f"{r.method} {r.macro_f1:.3f}" for r in metrics.itertuples()))
    return metrics
