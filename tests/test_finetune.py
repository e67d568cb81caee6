"""Cell-type classification: label filtering per organ, the seeded stratified split, and the three
methods on one split -- with the validation: on the demo-like cells (types with strong markers) the
fine-tuned tiny model comes within a few points of the near-perfect baseline."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from foundation_helpers import one_torch_thread, shared_classifier, shared_world  # noqa: F401 (fixture)

from cellfate.errors import CellfateError
from cellfate.foundation.finetune import FinetuneSettings, filter_labels, scores, stratified_split


def test_types_under_half_a_percent_of_their_organ_are_dropped() -> None:
    liver = ["hepatocyte"] * 990 + ["T cell"] * 4 + ["B cell"] * 6  # T cells: 0.4% of the liver
    spleen = ["T cell"] * 500 + ["B cell"] * 497 + ["unknown"] * 3
    obs = pd.DataFrame({"cell_type": liver + spleen, "tissue": ["liver"] * 1000 + ["spleen"] * 1000})
    keep, dropped = filter_labels(obs, "cell_type", "tissue", 0.005, 5)
    kept = obs[keep]
    assert not ((kept["tissue"] == "liver") & (kept["cell_type"] == "T cell")).any()
    assert ((kept["tissue"] == "spleen") & (kept["cell_type"] == "T cell")).sum() == 500  # fine in the spleen
    assert ((kept["tissue"] == "liver") & (kept["cell_type"] == "B cell")).sum() == 6  # 0.6% stays
    assert "unknown" not in set(kept["cell_type"])
    assert dropped.to_dict("records")[0]["cell_type"] == "T cell"
    keep_all, _ = filter_labels(obs, "cell_type", None, 0.005, 5)  # one group: T cells are 25% overall
    assert keep_all.sum() == 1997
    with pytest.raises(CellfateError, match="no 'label' column to classify"):
        filter_labels(obs, "label", "tissue", 0.005, 5)
    with pytest.raises(CellfateError, match="no 'organ' column to group"):
        filter_labels(obs, "cell_type", "organ", 0.005, 5)


def test_split_is_seeded_and_stratified() -> None:
    labels = np.array(["a"] * 100 + ["b"] * 50 + ["c"] * 10)
    train, test = stratified_split(labels, 0.2, seed=3)
    assert len(test) == 32 and len(set(train) & set(test)) == 0
    assert pd.Series(labels[test]).value_counts().to_dict() == {"a": 20, "b": 10, "c": 2}
    again, _ = stratified_split(labels, 0.2, seed=3)
    other, _ = stratified_split(labels, 0.2, seed=4)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    assert scores(["a", "b", "b"], ["a", "b", "a"])["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    with pytest.raises(CellfateError, match="unknown key 'learning_rate'"):
        FinetuneSettings.from_config({"learning_rate": 1e-3})
    assert (
        FinetuneSettings().lr == 5e-5 and FinetuneSettings().warmup_steps == 500 and FinetuneSettings().batch_size == 12
    )


@pytest.fixture(scope="module")
def world():
    return shared_world(max_length=64)


def test_finetuned_model_against_baseline_and_knn(world, tmp_path) -> None:
    from transformers import BertForSequenceClassification

    from cellfate.plotting.foundation import classifier_confusion

    out, metrics = shared_classifier(world)
    table = pd.read_csv(out / "metrics.tsv", sep="\t").set_index("method")
    assert list(table.index) == ["cellfate_finetuned", "baseline_logreg_pca", "knn_frozen_embeddings"]
    assert (table["n_test"] == 64).all() and (table["n_classes"] == 4).all()
    ours, baseline, knn = (table.loc[m, "macro_f1"] for m in table.index)
    # The cell types differ by 25-fold markers: the baseline is (near) perfect and the tiny model
    # cannot beat it; it must come close. Measured: ours 0.98, baseline 1.00, kNN on the random-init
    # model's frozen embeddings ~0.6 (no pretraining: what a model knows without fine-tuning).
    assert baseline >= 0.95
    assert ours >= 0.9 and baseline - ours <= 0.08
    assert 0.25 < knn <= 1.0
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert len(predictions) == 64 and {
        "true",
        "cellfate_finetuned",
        "baseline_logreg_pca",
        "knn_frozen_embeddings",
    } <= set(predictions)
    model = BertForSequenceClassification.from_pretrained(out / "model")
    labels = json.loads((out / "model" / "labels.json").read_text())
    assert labels["classes"] == sorted(model.config.label2id) == sorted(world.adatas[0].obs["cell_type"].unique())
    assert (out / "model" / "token_dictionary.json").read_text() == world.dictionary_path.read_text()
    classifier_confusion(out / "predictions.tsv", out / "metrics.tsv", tmp_path / "confusion.png")
    assert (tmp_path / "confusion.png").stat().st_size > 10_000


def test_shards_that_are_not_the_qc_files_cells(world, tmp_path) -> None:
    from cellfate.foundation.cells import load_cells
    from cellfate.foundation.classify import qc_counts

    cells = load_cells([str(s) for s in world.shards])
    counts = qc_counts(cells, [str(h) for h in world.qc_h5ads], world.dictionary)
    assert counts.shape[0] == len(cells)
    assert np.array_equal(counts[:5].toarray(), world.adatas[0].X[:5].toarray())
    changed = ad.read_h5ad(world.qc_h5ads[0])
    changed.obs["filter_pass"] = changed.obs["filter_pass"].to_numpy() & (np.arange(changed.n_obs) != 3)
    path = tmp_path / "panglaodb" / "s0.h5ad"
    path.parent.mkdir()
    changed.write_h5ad(path)
    with pytest.raises(CellfateError, match="do not match the 160 cells of the tokenized shard"):
        qc_counts(cells, [str(path), str(world.qc_h5ads[1])], world.dictionary)


def test_cross_source_split_tests_on_one_source_only() -> None:
    from cellfate.errors import CellfateError
    from cellfate.foundation.finetune import source_split

    labels = np.array(["B", "T", "B", "T", "M", "B", "X"])
    sources = np.array(["a", "a", "b", "b", "a", "c", "c"])
    train, test = source_split(labels, sources, "c")
    assert train.tolist() == [0, 1, 2, 3, 4] and test.tolist() == [5]  # "X" is only in c: not testable
    with pytest.raises(CellfateError, match="not among the sources"):
        source_split(labels, sources, "zzz")
