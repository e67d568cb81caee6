"""The masking collator: right padding, BERT's 15% / 80-10-10 rule, never padding or special tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cellfate.errors import CellfateError
from cellfate.foundation.collator import IGNORE_INDEX, MaskingCollator, masking_generator
from cellfate.foundation.vocab import load_token_dictionary

N_GENES = 500


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "token_dictionary.json"
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3} | {f"ENSMUSG{i:011d}": i + 4 for i in range(N_GENES)}
    path.write_text(json.dumps(tokens))
    return load_token_dictionary(path)


def _cells(n: int, rng: np.random.Generator, cls_eos: bool = True) -> list[np.ndarray]:
    cells = []
    for _ in range(n):
        genes = rng.choice(np.arange(4, N_GENES + 4), size=int(rng.integers(20, 200)), replace=False)
        cells.append(np.concatenate([[2], genes, [3]]) if cls_eos else genes)
    return cells


def test_pad_right_with_attention_mask(vocab) -> None:
    batch = MaskingCollator(vocab, 2048).pad([[5, 6, 7], {"input_ids": [8]}, np.array([9, 10], dtype=np.int32)])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["input_ids"].dtype == torch.long
    assert MaskingCollator(vocab, 2048, pad_to_multiple_of=8).pad([[5, 6, 7]])["input_ids"].shape == (1, 8)


def test_masking_rates_and_exclusions(vocab) -> None:
    rng = np.random.default_rng(0)
    collator = MaskingCollator(vocab, 2048)
    padded = collator.pad(_cells(400, rng))
    out = collator.mask(padded, masking_generator(0, 1))
    ids, labels, attention = padded["input_ids"], out["labels"], padded["attention_mask"].bool()
    genes = attention & (ids >= 4)
    selected = labels != IGNORE_INDEX
    # never padding, never <cls>/<eos>; labels hold the original ids
    assert not (selected & ~genes).any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(out["input_ids"][~selected], ids[~selected])
    rate = selected.sum().item() / genes.sum().item()
    n = selected.sum().item()
    assert abs(rate - 0.15) < 0.01, rate
    became_mask = (out["input_ids"] == vocab.mask_id) & selected
    kept = (out["input_ids"] == ids) & selected
    random = selected & ~became_mask & ~kept
    assert abs(became_mask.sum().item() / n - 0.8) < 0.02
    # a random draw may hit the original gene (1 in 500), which counts as kept
    assert abs(kept.sum().item() / n - 0.1) < 0.015
    assert abs(random.sum().item() / n - 0.1) < 0.015
    # random replacements are genes, never special tokens
    assert (out["input_ids"][random] >= 4).all()


def test_masks_are_reproducible_from_the_key(vocab) -> None:
    collator = MaskingCollator(vocab, 2048)
    padded = collator.pad(_cells(20, np.random.default_rng(1)))
    first = collator.mask(padded, masking_generator(3, 0, 5, 1))
    again = collator.mask(padded, masking_generator(3, 0, 5, 1))
    other = collator.mask(padded, masking_generator(3, 0, 6, 1))
    assert torch.equal(first["labels"], again["labels"]) and torch.equal(first["input_ids"], again["input_ids"])
    assert not torch.equal(first["labels"], other["labels"])


def test_ids_beyond_vocabulary_and_overlong_cells_are_user_errors(vocab) -> None:
    collator = MaskingCollator(vocab, 16)
    with pytest.raises(CellfateError, match="outside the vocabulary of 504 tokens"):
        collator.pad([[5, 6, 504]])
    with pytest.raises(CellfateError, match="at most 16"):
        collator.pad([list(range(4, 24))])


def test_token_dictionary_checks(tmp_path) -> None:
    path = tmp_path / "token_dictionary.json"
    path.write_text(json.dumps({"<pad>": 0, "ENSMUSG1": 1}))
    with pytest.raises(CellfateError, match="<mask>"):
        load_token_dictionary(path)
    path.write_text(json.dumps({"<pad>": 0, "<mask>": 1, "ENSMUSG1": 1}))
    with pytest.raises(CellfateError, match="used twice"):
        load_token_dictionary(path)
    with pytest.raises(CellfateError, match="not found"):
        load_token_dictionary(tmp_path / "missing.json")
