"""A small, self-contained world for the model-use tests: simulated cells of known types, tokenized
by a plain rank-value encoding, written as per-sample shards, and a tiny random-init BERT.

Independent of the tokenizer and pretraining stages on purpose: these tests check classification,
embedding, perturbation and the cross-species path, given inputs in the agreed formats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cellfate.simulate.corpus import corpus_model, simulate_sample

TYPES = ["B cell", "T cell", "macrophage", "endothelial cell"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny models gain nothing from a second thread, and on a shared 2-core machine OpenMP's
    spin-waiting made them several times slower. Import this into a test module to apply it there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build_dictionary(gene_ids, v2: bool = False) -> dict[str, int]:
    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if v2 else [])
    return {t: i for i, t in enumerate(specials + sorted(gene_ids))}


def gene_medians(adata: ad.AnnData) -> pd.Series:
    """Median of count / total * 1e4 over the cells where each gene is detected."""
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    norm = sp.diags(1e4 / np.asarray(X.sum(1)).ravel()) @ X
    norm = norm.tocsc()
    med = [
        np.median(norm.data[norm.indptr[j] : norm.indptr[j + 1]]) if norm.indptr[j + 1] > norm.indptr[j] else np.nan
        for j in range(X.shape[1])
    ]
    return pd.Series(med, index=adata.var_names)


def rank_tokenize(
    adata: ad.AnnData, dictionary: dict[str, int], medians: pd.Series, max_length: int = 2048, v2: bool = False
) -> list[np.ndarray]:
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    token = np.array([dictionary.get(g, -1) for g in adata.var_names])
    med = medians.reindex(adata.var_names).to_numpy()
    rows = []
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        cols, vals = X.indices[lo:hi], X.data[lo:hi]
        ok = (token[cols] >= 0) & np.isfinite(med[cols]) & (vals > 0)
        cols, vals = cols[ok], vals[ok]
        value = vals / X[i].sum() * 1e4 / med[cols]
        order = np.lexsort((token[cols], -value))
        ids = token[cols][order][: max_length - (2 if v2 else 0)]
        if v2:
            ids = np.concatenate([[dictionary["<cls>"]], ids, [dictionary["<eos>"]]])
        rows.append(ids.astype(np.int32))
    return rows


def write_shard(path: Path, rows: list[np.ndarray], obs: pd.DataFrame) -> Path:
    import datasets

    data = {"input_ids": [r.tolist() for r in rows], "length": [len(r) for r in rows]}
    for column in ("cell_type", "source", "sample", "tissue"):
        data[column] = obs[column].astype(str).tolist()
    datasets.Dataset.from_dict(data).save_to_disk(str(path))
    np.save(path.with_name(path.name + ".lengths.npy"), np.array([len(r) for r in rows], dtype=np.int32))
    return path


def tiny_model(
    dictionary: dict[str, int],
    directory: Path,
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    max_length: int = 512,
) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(dictionary),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=max_length,
        hidden_act="silu",
        pad_token_id=0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForMaskedLM(config)
    model.save_pretrained(directory)
    (directory / "token_dictionary.json").write_text(json.dumps(dictionary))
    return directory


@dataclass
class World:
    root: Path
    model_dir: Path
    dictionary_path: Path
    shards: list[Path]
    qc_h5ads: list[Path]
    dictionary: dict[str, int]
    adatas: list[ad.AnnData]
    rows: list[list[np.ndarray]]
    medians: pd.Series
    max_length: int


def make_world(
    root: Path,
    *,
    n_genes: int = 300,
    cells: tuple[int, ...] = (160, 160),
    types: list[str] = TYPES,
    seed: int = 0,
    v2: bool = False,
    max_length: int = 512,
) -> World:
    """Samples of simulated cells (QC'd h5ads + shards), their dictionary, and a tiny model."""
    model = corpus_model(sorted(types), n_genes, seed)
    adatas = []
    for k, n in enumerate(cells):
        a = simulate_sample(model, f"s{k}", types, n, seed, damaged_fraction=0.0, low_count_fraction=0.0)
        a.obs["source"] = "panglaodb"
        a.obs["sample"] = f"s{k}"
        a.obs["tissue"] = "spleen" if k % 2 == 0 else "liver"
        a.obs["n_counts"] = np.asarray(a.X.sum(1)).ravel().astype(float)
        a.obs["filter_pass"] = True
        a.obs["cell_type"] = a.obs["cell_type"].astype(str)
        adatas.append(a)
    medians = gene_medians(ad.concat(adatas))
    dictionary = build_dictionary(medians.dropna().index, v2=v2)
    root.mkdir(parents=True, exist_ok=True)
    dictionary_path = root / "token_dictionary.json"
    dictionary_path.write_text(json.dumps(dictionary))
    shards, h5ads, all_rows = [], [], []
    for a in adatas:
        rows = rank_tokenize(a, dictionary, medians, max_length, v2)
        sample = a.obs["sample"].iloc[0]
        shards.append(write_shard(root / "shards" / "panglaodb" / sample, rows, a.obs))
        h5 = root / "qc" / "panglaodb" / f"{sample}.h5ad"
        h5.parent.mkdir(parents=True, exist_ok=True)
        a.write_h5ad(h5)
        h5ads.append(h5)
        all_rows.append(rows)
    model_dir = tiny_model(dictionary, root / "model", seed=seed, max_length=max_length)
    return World(root, model_dir, dictionary_path, shards, h5ads, dictionary, adatas, all_rows, medians, max_length)


_CACHE: dict[tuple, object] = {}


def _scratch() -> Path:
    import atexit
    import shutil
    import tempfile

    if "root" not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="cellfate-foundation-tests-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _CACHE["root"] = root
    return _CACHE["root"]


def shared_world(**kwargs) -> World:
    """One world per set of arguments for the whole pytest session (the test files share it)."""
    key = ("world", tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        name = "world-" + "-".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
        _CACHE[key] = make_world(_scratch() / name, **kwargs)
    return _CACHE[key]


def shared_classifier(world: World, epochs: float = 3.0) -> tuple[Path, object]:
    """The world's model fine-tuned as a cell-type classifier (directory, metrics), once per session."""
    from cellfate.foundation.classify import classify

    key = ("classifier", str(world.root), epochs)
    if key not in _CACHE:
        out = world.root / f"classifier-{epochs}"
        metrics = classify(
            str(world.model_dir),
            [str(s) for s in world.shards],
            str(world.dictionary_path),
            [str(h) for h in world.qc_h5ads],
            out_model=str(out / "model"),
            out_metrics=str(out / "metrics.tsv"),
            out_predictions=str(out / "predictions.tsv"),
            settings={
                "lr": 1e-3,
                "warmup_steps": 20,
                "epochs": epochs,
                "batch_size": 12,
                "precision": "fp32",
                "device": "cpu",
            },
        )
        _CACHE[key] = (out, metrics)
    return _CACHE[key]
