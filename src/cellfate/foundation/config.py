"""Model architecture as a small YAML file <-> transformers' ``BertConfig``.

The YAML (``config/models/*.yaml``) names only the architecture; the vocabulary size and the
padding id always come from the token dictionary, so a model can never be built for a vocabulary
other than the one its inputs were tokenized with. ``model_yaml`` turns a ``BertConfig`` back into
the same keys, which is how a checkpoint records what it was trained as.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cellfate.errors import CellfateError
from cellfate.foundation.vocab import TokenDictionary

# Architecture keys a model YAML must give, with their expected Python types.
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "num_hidden_layers": int,
    "hidden_size": int,
    "num_attention_heads": int,
    "intermediate_size": int,
    "hidden_act": str,
    "hidden_dropout_prob": (int, float),
    "attention_probs_dropout_prob": (int, float),
    "max_position_embeddings": int,
}
# Optional keys and their defaults (BERT's, as Geneformer used them).
OPTIONAL: dict[str, Any] = {
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "tie_word_embeddings": True,
}
# Free-text keys that describe the file and do not reach the model.
DESCRIPTIVE = ("name", "description")
ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu")


def read_model_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The architecture in a model YAML, checked key by key (unknown keys are errors, not ignored)."""
    path = Path(path)
    if not path.is_file():
        raise CellfateError("model config not found", path)
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CellfateError(f"model config is not valid YAML: {err}", path) from None
    if not isinstance(spec, dict):
        raise CellfateError("model config must be a YAML mapping of BERT settings", path)
    allowed = set(REQUIRED) | set(OPTIONAL) | set(DESCRIPTIVE) | {"vocab_size"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise CellfateError(f"unknown key {unknown[0]!r} in model config (allowed: {', '.join(sorted(allowed))})", path)
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise CellfateError(f"model config lacks {missing[0]!r}", path)
    for key, kind in REQUIRED.items():
        if not isinstance(spec[key], kind) or isinstance(spec[key], bool):
            raise CellfateError(f"{key} must be a {getattr(kind, '__name__', 'number')}, got {spec[key]!r}", path)
    for key in (
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
    ):
        if spec[key] < 1:
            raise CellfateError(f"{key} must be at least 1, got {spec[key]}", path)
    if spec["hidden_size"] % spec["num_attention_heads"]:
        raise CellfateError(
            f"hidden_size {spec['hidden_size']} is not a multiple of num_attention_heads {spec['num_attention_heads']}",
            path,
        )
    if spec["hidden_act"] not in ACTIVATIONS:
        raise CellfateError(f"hidden_act must be one of {', '.join(ACTIVATIONS)}, got {spec['hidden_act']!r}", path)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if not 0 <= spec[key] < 1:
            raise CellfateError(f"{key} must lie in [0, 1), got {spec[key]}", path)
    out = {k: spec[k] for k in REQUIRED}
    for key, default in OPTIONAL.items():
        value = spec.get(key, default)
        if type(value) is not type(default) and not (isinstance(default, float) and isinstance(value, int)):
            raise CellfateError(f"{key} must be a {type(default).__name__}, got {value!r}", path)
        out[key] = value
    out.update({k: spec[k] for k in (*DESCRIPTIVE, "vocab_size") if k in spec})
    return out


def bert_config(spec: dict[str, Any], vocab: TokenDictionary, where: str | os.PathLike[str] | None = None):
    """A ``BertConfig`` for ``spec`` whose vocabulary is the token dictionary's."""
    from transformers import BertConfig  # heavy import, only where a model is built

    given = spec.get("vocab_size")
    if given is not None and given != vocab.vocab_size:
        raise CellfateError(
            f"model config says vocab_size {given} but the token dictionary {vocab.path} has {vocab.vocab_size} tokens "
            "(drop vocab_size from the model config: it is taken from the dictionary)",
            where,
        )
    arch = {k: spec[k] for k in [*REQUIRED, *OPTIONAL] if k in spec}
    config = BertConfig(vocab_size=vocab.vocab_size, pad_token_id=vocab.pad_id, **arch)
    config.architectures = ["BertForMaskedLM"]
    return config


def model_yaml(config) -> dict[str, Any]:
    """The architecture keys of a ``BertConfig``, as a model YAML would hold them."""
    out = {k: getattr(config, k) for k in [*REQUIRED, *OPTIONAL]}
    out["vocab_size"] = config.vocab_size
    return out


def write_model_yaml(config, path: str | os.PathLike[str]) -> None:
    """Write ``model_yaml(config)`` atomically (recorded beside the trained model)."""
    from cellfate.io import write_text

    write_text(path, yaml.safe_dump(model_yaml(config), sort_keys=False))


def check_vocabulary(config, vocab: TokenDictionary, where: str | os.PathLike[str]) -> None:
    """Stop when a model (or checkpoint) was built for another token dictionary."""
    if config.vocab_size != vocab.vocab_size or config.pad_token_id != vocab.pad_id:
        raise CellfateError(
            f"model has vocab_size {config.vocab_size} (pad id {config.pad_token_id}) but the token dictionary "
            f"{vocab.path} has {vocab.vocab_size} tokens (pad id {vocab.pad_id}): they do not belong together",
            where,
        )


def build_model(config):
    """A freshly initialised ``BertForMaskedLM`` with PyTorch's fused SDPA attention.

    Seed torch before calling: initialisation draws from the global generator.
    """
    from transformers import BertForMaskedLM

    return BertForMaskedLM._from_config(config, attn_implementation="sdpa")
