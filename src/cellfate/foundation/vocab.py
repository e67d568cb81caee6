"""The token dictionary written by the tokenizer: gene ids and special tokens -> integer ids.

The dictionary fixes the model's vocabulary. Loading it checks what the model relies on (``<pad>``
and ``<mask>`` present, ids unique and contiguous from 0) so that a wrong file stops the run with
one line instead of an ``IndexError`` deep inside an embedding lookup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cellfate.errors import CellfateError

PAD = "<pad>"
MASK = "<mask>"
CLS = "<cls>"
EOS = "<eos>"
SPECIAL_TOKENS = (PAD, MASK, CLS, EOS)


@dataclass(frozen=True)
class TokenDictionary:
    """Token -> id, with the special ids the collator and the model need."""

    path: str
    token_to_id: Mapping[str, int] = field(repr=False)

    @property
    def vocab_size(self) -> int:
        return len(self.token_to_id)

    @property
    def pad_id(self) -> int:
        return self.token_to_id[PAD]

    @property
    def mask_id(self) -> int:
        return self.token_to_id[MASK]

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids that are never masked and never drawn as random replacements."""
        return tuple(self.token_to_id[t] for t in SPECIAL_TOKENS if t in self.token_to_id)

    @property
    def gene_ids(self) -> list[int]:
        """Ids of real genes: the pool that the 10% random replacements are drawn from."""
        special = set(self.special_ids)
        return sorted(i for i in self.token_to_id.values() if i not in special)


def load_token_dictionary(path: str | os.PathLike[str]) -> TokenDictionary:
    """Read and check ``token_dictionary.json``; every problem is a one-line CellfateError."""
    path = Path(path)
    if not path.is_file():
        raise CellfateError("token dictionary not found (tokenize the corpus first)", path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CellfateError(f"token dictionary is not valid JSON ({err.msg}, line {err.lineno})", path) from None
    if not isinstance(raw, dict) or not raw:
        raise CellfateError("token dictionary must be a non-empty JSON object {token: id}", path)
    bad = [k for k, v in raw.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad:
        raise CellfateError(f"token {bad[0]!r} has id {raw[bad[0]]!r}; ids must be non-negative integers", path)
    for token in (PAD, MASK):
        if token not in raw:
            raise CellfateError(f"token dictionary lacks the special token {token}", path)
    ids = sorted(raw.values())
    if ids != list(range(len(ids))):
        dup = next((a for a, b in zip(ids, ids[1:]) if a == b), None)
        what = f"id {dup} is used twice" if dup is not None else f"ids are not contiguous 0..{len(ids) - 1}"
        raise CellfateError(f"token dictionary is malformed: {what}", path)
    if len(raw) <= len([t for t in SPECIAL_TOKENS if t in raw]):
        raise CellfateError("token dictionary holds no genes", path)
    return TokenDictionary(path=str(path), token_to_id=dict(raw))
