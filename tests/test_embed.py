"""Cell embeddings: what the definition says (mean of gene tokens of a layer, <cls> when there is
one), independent of batching and padding, written where the workflow expects them; and a
dataset tokenized with another dictionary stops with one line instead of an IndexError."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch
from foundation_helpers import one_torch_thread, shared_world, tiny_model, write_shard  # noqa: F401 (fixture)

from cellfate.errors import CellfateError
from cellfate.foundation.embed import Embedder, load_pretrained


@pytest.fixture(scope="module")
def world():
    return shared_world(max_length=64)


def _manual_mean(model, row: np.ndarray, layer: int, exclude=(0, 1)) -> np.ndarray:
    with torch.inference_mode():
        hidden = model(input_ids=torch.as_tensor(row[None], dtype=torch.long), output_hidden_states=True).hidden_states[
            layer
        ][0]
    keep = ~np.isin(row, exclude)
    return hidden[torch.from_numpy(keep)].mean(0).numpy()


def test_mean_of_gene_tokens_of_a_layer_whatever_the_batch(world) -> None:
    pretrained = load_pretrained(world.model_dir, "cpu")
    rows = [r[:n] for r, n in zip(world.rows[0], (64, 7, 30, 64, 12, 50, 3, 64, 41, 20))]  # padding in every batch
    for layer in (-1, 1, 0):
        embedder = Embedder(pretrained, layer=layer, batch_size=4)
        assert embedder.mode == "mean"
        batched = embedder.embed(rows)
        alone = np.stack([embedder.embed([r])[0] for r in rows])
        manual = np.stack([_manual_mean(pretrained.model, r, layer) for r in rows])
        np.testing.assert_allclose(batched, manual, atol=1e-5)
        np.testing.assert_allclose(alone, manual, atol=1e-5)
    with pytest.raises(CellfateError, match="layer 5 does not exist"):
        Embedder(pretrained, layer=5)
    with pytest.raises(CellfateError, match="needs a <cls> token"):
        Embedder(pretrained, pooling="cls")


def test_cls_pooling_when_the_dictionary_has_it(tmp_path) -> None:
    dictionary = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, **{f"ENSMUSG{i:011d}": i for i in range(4, 40)}}
    tiny_model(dictionary, tmp_path / "model", max_length=32)
    pretrained = load_pretrained(tmp_path / "model", "cpu")
    rng = np.random.default_rng(0)
    rows = [np.concatenate([[2], rng.choice(np.arange(4, 40), size=n, replace=False), [3]]) for n in (5, 12, 20)]
    embedder = Embedder(pretrained)
    assert embedder.mode == "cls"
    with torch.inference_mode():
        want = np.stack(
            [
                pretrained.model(input_ids=torch.as_tensor(r[None], dtype=torch.long), output_hidden_states=True)
                .hidden_states[-1][0, 0]
                .numpy()
                for r in rows
            ]
        )
    np.testing.assert_allclose(embedder.embed(rows), want, atol=1e-5)
    mean = Embedder(pretrained, pooling="mean").embed(rows)  # <cls>/<eos> are left out of the mean
    np.testing.assert_allclose(mean[0], _manual_mean(pretrained.model, rows[0], -1, exclude=(0, 1, 2, 3)), atol=1e-5)


def test_embeddings_file_and_umap_figure(world, tmp_path) -> None:
    from cellfate.foundation.embed import write_embeddings
    from cellfate.plotting.foundation import embedding_umap

    out = tmp_path / "embeddings.h5ad"
    write_embeddings(
        str(world.model_dir),
        [str(s) for s in world.shards],
        str(world.dictionary_path),
        str(out),
        device="cpu",
        precision="fp32",
    )
    adata = ad.read_h5ad(out)
    assert adata.n_obs == sum(len(r) for r in world.rows) and adata.obsm["X_cellfate"].shape[1] == 32
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2) and np.isfinite(adata.obsm["X_umap"]).all()
    assert {"cell_type", "source", "sample", "tissue"} <= set(adata.obs)
    assert adata.uns["cellfate_embedding"]["pooling"] == "mean"
    embedding_umap(out, tmp_path / "umap.png")
    assert (tmp_path / "umap.png").stat().st_size > 10_000


def test_umap_layout_keeps_clusters_apart() -> None:
    from sklearn.datasets import make_blobs
    from sklearn.metrics import silhouette_score

    from cellfate.umap_layout import umap_layout

    X, y = make_blobs(n_samples=600, centers=5, n_features=16, cluster_std=2.0, random_state=0)
    xy = umap_layout(X, seed=0, n_epochs=150)
    assert silhouette_score(xy, y) > 0.6
    np.testing.assert_array_equal(xy, umap_layout(X, seed=0, n_epochs=150))  # seeded


def test_a_dataset_tokenized_with_another_dictionary(world, tmp_path) -> None:
    from cellfate.foundation.embed import write_embeddings

    other = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(sorted(world.dictionary, reverse=True)[:400])}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(CellfateError, match="tokenized with another dictionary than the model's"):
        write_embeddings(
            str(world.model_dir),
            [str(s) for s in world.shards],
            str(tmp_path / "other.json"),
            str(tmp_path / "e.h5ad"),
            device="cpu",
        )
    # Without the shards' dictionary to compare, ids beyond the vocabulary still give one line, not an IndexError.
    big = [np.array([2, 5, len(world.dictionary) + 50], dtype=np.int32)] * 3
    obs = world.adatas[0].obs.iloc[:3]
    shard = write_shard(tmp_path / "shards" / "panglaodb" / "s0", big, obs)
    with pytest.raises(CellfateError, match="outside the model's vocabulary"):
        write_embeddings(
            str(world.model_dir), [str(shard)], str(world.dictionary_path), str(tmp_path / "e.h5ad"), device="cpu"
        )
    pretrained = load_pretrained(world.model_dir, "cpu")
    with pytest.raises(CellfateError, match="another token dictionary"):
        Embedder(pretrained).embed(big)
