"""Self-contained model folders: ours after pretraining, and published Geneformer checkpoints.

A model is usable only with its own token dictionary and gene medians (a mismatch is the
commonest Geneformer error), so a folder we hand out holds all of them: the Hugging Face
``config.json`` + weights, ``token_dictionary.json``, ``gene_medians.tsv`` and a short
``model_card.md`` (+ ``model_card.json``: corpus, steps, held-out loss, the learning checks).
Pointing ``foundation.pretrained_model`` at such a folder needs nothing else.

A published checkpoint (Geneformer V1/V2, Mouse-Geneformer) is a ``BertForMaskedLM`` folder with
its dictionaries as pickles beside it: :func:`import_pretrained` copies it into the same layout,
with the dictionary as the tokenizer converted it, so every model-use job reads one format.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cellfate.errors import CellfateError
from cellfate.io import atomic_path

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"


def weight_file(model_dir: str | os.PathLike[str]) -> Path:
    """The folder's weights (safetensors preferred); a folder without config or weights is a user error."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise CellfateError("not a Hugging Face model folder (no config.json)", model_dir)
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise CellfateError(f"model folder has no weights ({' or '.join(WEIGHT_FILES)})", model_dir)


def check_bert_config(model_dir: str | os.PathLike[str], vocab_size: int, max_length: int | None) -> dict[str, Any]:
    """``config.json`` must describe a BERT whose vocabulary is the dictionary's and that fits the cells."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CellfateError(f"config.json is not valid JSON ({err.msg})", path) from None
    if config.get("model_type") != "bert":
        raise CellfateError(f"model_type is {config.get('model_type')!r}; a Geneformer checkpoint is a BERT", path)
    if config.get("vocab_size") != vocab_size:
        raise CellfateError(
            f"model has vocab_size {config.get('vocab_size')} but the token dictionary has {vocab_size} tokens: "
            "give the dictionary published with this checkpoint (tokenize.token_dictionary)", path)
    positions = config.get("max_position_embeddings", 0)
    if max_length and positions < max_length:
        raise CellfateError(f"model takes {positions} positions but cells are tokenized to {max_length}: "
                            f"set tokenize.max_length to at most {positions}", path)
    return config


def write_card(model_dir: str | os.PathLike[str], card: Mapping[str, Any]) -> None:
    """``model_card.json`` (everything) and ``model_card.md`` (the same, for people)."""
    model_dir = Path(model_dir)
    with atomic_path(model_dir / CARD_JSON) as tmp:
        tmp.write_text(json.dumps(card, indent=1, default=str) + "\n")
    lines = [f"# {card.get('name', 'cellfate foundation model')}", ""]
    lines += [f"- **{key.replace('_', ' ')}**: {value}" for key, value in card.items() if key != "name"]
    with atomic_path(model_dir / CARD_MD) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def corpus_summary(shards: list[str]) -> dict[str, Any]:
    """Cells, tokens and samples of the pretraining corpus, from the shards' lengths files."""
    import numpy as np

    from cellfate.foundation.data import lengths_path

    lengths = [np.load(lengths_path(s)) for s in shards]
    return {
        "cells": int(sum(len(x) for x in lengths)),
        "tokens": int(sum(int(x.sum()) for x in lengths)),
        "samples": [str(Path(s).relative_to(Path(s).parents[1])) for s in shards],
    }


def publish_pretrained(trained: str | os.PathLike[str], medians: str | os.PathLike[str], shards: list[str],
                       heldout_tsv: str | os.PathLike[str], out: str | os.PathLike[str],
                       heldout_out: str | os.PathLike[str], *, settings: Mapping[str, Any], knn_k: int = 10,
                       knn_shards: list[str] | None = None) -> dict[str, Any]:
    """The trainer's folder + gene medians + model card -> ``out``; the learning checks -> ``heldout_out``.

    ``settings`` are the pretraining settings (the held-out split is redrawn from them, and they go
    on the card). ``knn_shards`` (default ``shards``): the cells whose types the zero-shot kNN
    tells apart, when the pretraining corpus holds cells outside that task.
    """
    from cellfate.foundation.learning import learning_table
    from cellfate.foundation.train import TrainSettings
    from cellfate.io import write_table

    table = learning_table(
        trained, shards, heldout_tsv,
        heldout_fraction=settings.get("heldout_fraction", TrainSettings.heldout_fraction),
        heldout_max_cells=settings.get("heldout_max_cells", TrainSettings.heldout_max_cells),
        seed=settings.get("seed", TrainSettings.seed), knn_k=knn_k, knn_shards=knn_shards,
    )
    row = table.iloc[-1].to_dict() if len(table) else {}
    config = json.loads((Path(trained) / "config.json").read_text())
    card = {
        "name": "cellfate masked-gene model (Geneformer-style BertForMaskedLM)",
        "architecture": {k: config.get(k) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                                     "intermediate_size", "hidden_act", "max_position_embeddings",
                                                     "vocab_size")},
        "corpus": corpus_summary(shards),
        "steps": int(row.get("step", 0)),
        "training": dict(settings),
        "heldout": {k: row[k] for k in row if k != "step"},
        "files": ["config.json", weight_file(trained).name, "token_dictionary.json", "gene_medians.tsv"],
        "use": "foundation.pretrained_model: <this folder> (its dictionary and medians are read from it)",
    }
    with atomic_path(out, is_dir=True) as tmp:
        for item in Path(trained).iterdir():
            shutil.copyfile(item, tmp / item.name)
        shutil.copyfile(medians, tmp / "gene_medians.tsv")
        write_card(tmp, card)
    write_table(table, heldout_out)
    log.info("model folder %s: held-out loss %.3f, %.3f nats below unigram; kNN accuracy %.3f (majority %.3f)",
             out, row.get("heldout_mlm_loss", float("nan")), row.get("nats_below_unigram", float("nan")),
             row.get("knn_accuracy", float("nan")), row.get("knn_majority_share", float("nan")))
    return card


def import_pretrained(source: str | os.PathLike[str], dictionary_json: str | os.PathLike[str],
                      medians: str | os.PathLike[str], out: str | os.PathLike[str], *,
                      max_length: int | None = None, gene_mapping: str | os.PathLike[str] | None = None) -> None:
    """Copy a published ``BertForMaskedLM`` folder into a self-contained one, checked against its dictionary.

    ``dictionary_json`` is the tokenizer's JSON copy of the checkpoint's own dictionary (built from
    the published pickle), ``medians`` its gene medians; the optional symbol -> Ensembl mapping is
    copied too (as JSON) so gene names in later steps resolve as the checkpoint's authors meant.
    """
    from cellfate.corpus.dictionary import load_gene_mapping, load_gene_medians, load_token_dictionary

    weights = weight_file(source)
    dictionary = load_token_dictionary(dictionary_json)
    config = check_bert_config(source, len(dictionary), max_length)
    gene_medians = load_gene_medians(medians)
    genes = [g for g in dictionary if g not in ("<pad>", "<mask>", "<cls>", "<eos>")]
    missing = [g for g in genes if g not in gene_medians]
    if len(missing) == len(genes):
        raise CellfateError("no gene of the token dictionary has a median: the medians belong to another model", medians)
    if missing:  # such genes can never be ranked, so never appear in a cell: worth knowing, not fatal
        log.warning("%d of the dictionary's genes have no median (e.g. %s); cells never hold them", len(missing), missing[0])
    with atomic_path(out, is_dir=True) as tmp:
        shutil.copyfile(Path(source) / "config.json", tmp / "config.json")
        shutil.copyfile(weights, tmp / weights.name)
        shutil.copyfile(dictionary_json, tmp / "token_dictionary.json")
        pd.DataFrame({"gene_id": list(gene_medians), "median": list(gene_medians.values())}).to_csv(
            tmp / "gene_medians.tsv", sep="\t", index=False)
        if gene_mapping:
            (tmp / "gene_mapping.json").write_text(json.dumps(load_gene_mapping(gene_mapping)) + "\n")
        write_card(tmp, {
            "name": f"imported checkpoint {Path(source).name}",
            "source": str(Path(source).resolve()),
            "weights": weights.name,
            "architecture": {k: config.get(k) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                                         "max_position_embeddings", "vocab_size")},
            "token_dictionary": f"{len(dictionary)} tokens",
            "gene_medians": f"{len(gene_medians)} genes",
            "gene_mapping": str(gene_mapping) if gene_mapping else "none",
        })
    log.info("imported %s (%s, vocabulary %d) into %s", source, weights.name, len(dictionary), out)
