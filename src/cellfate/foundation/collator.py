"""Padding and masking of pre-tokenized cells for masked-gene modelling.

The corpus is already integer ids (rank-value encoded genes), so no text tokenizer is involved:
``pad`` turns a list of id arrays into a right-padded batch and ``mask`` applies BERT's rule:
each real gene token is selected with probability 15%; of those 80% become ``<mask>``, 10% a
random gene and 10% stay as they are; only selected tokens carry a label. Padding and special
tokens (``<pad>``, ``<mask>``, ``<cls>``, ``<eos>``) are never selected.

The two steps are separate on purpose: padding runs in DataLoader workers, masking runs in the
training process with a generator seeded from (seed, epoch, batch position, rank), so the masks
of every batch are reproducible -- a resumed run draws exactly the masks the uninterrupted run
would have drawn, without saving any masking state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from cellfate.errors import CellfateError
from cellfate.foundation.vocab import TokenDictionary

IGNORE_INDEX = -100  # labels of unselected positions; torch's cross_entropy skips them


class MaskingCollator:
    """Pad cells to the longest in the batch (right) and mask them for the MLM objective."""

    def __init__(
        self,
        vocab: TokenDictionary,
        max_length: int,
        *,
        mlm_probability: float = 0.15,
        mask_fraction: float = 0.8,
        random_fraction: float = 0.1,
        pad_to_multiple_of: int = 1,
    ) -> None:
        if not 0 < mlm_probability < 1:
            raise CellfateError(f"mlm_probability must lie in (0, 1), got {mlm_probability}")
        if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
            raise CellfateError(f"mask/random fractions {mask_fraction}/{random_fraction} must be >= 0 and sum to <= 1")
        self.vocab_size = vocab.vocab_size
        self.dictionary_path = vocab.path
        self.pad_id = vocab.pad_id
        self.mask_id = vocab.mask_id
        self.special_ids = torch.tensor(vocab.special_ids, dtype=torch.long)
        self.gene_ids = torch.tensor(vocab.gene_ids, dtype=torch.long)
        self.max_length = max_length
        self.mlm_probability = mlm_probability
        self.mask_fraction = mask_fraction
        self.random_fraction = random_fraction
        self.pad_to_multiple_of = pad_to_multiple_of

    def pad(self, cells: Sequence[Sequence[int] | np.ndarray | Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` of shape (cells, longest), padded on the right.

        Accepts id sequences or rows with an ``input_ids`` field. Ids outside the vocabulary and
        cells longer than the model's positions are user errors (a dictionary/corpus mismatch).
        """
        rows = [np.asarray(c["input_ids"] if isinstance(c, Mapping) else c, dtype=np.int64) for c in cells]
        longest = max((len(r) for r in rows), default=0)
        if longest > self.max_length:
            raise CellfateError(
                f"a cell has {longest} tokens but the model takes at most {self.max_length} "
                "(max_position_embeddings): tokenize with a smaller maximum length or use a model with more positions"
            )
        width = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of if longest else 0
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            attention[i, : len(row)] = 1
        if rows and longest:
            flat = np.concatenate(rows)
            low, high = int(flat.min()), int(flat.max())
            if low < 0 or high >= self.vocab_size:
                bad = low if low < 0 else high
                raise CellfateError(
                    f"token id {bad} is outside the vocabulary of {self.vocab_size} tokens: the shards were "
                    f"tokenized with another token dictionary than {self.dictionary_path}"
                )
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(attention)}

    def mask(
        self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """A masked copy of a padded batch with ``labels`` (-100 where nothing is predicted)."""
        ids = batch["input_ids"]
        attention = batch["attention_mask"].bool()
        maskable = attention & ~torch.isin(ids, self.special_ids)
        draw = torch.rand(ids.shape, generator=generator)
        selected = (draw < self.mlm_probability) & maskable
        labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
        # One more uniform per position decides mask / random / keep among the selected ones.
        action = torch.rand(ids.shape, generator=generator)
        to_mask = selected & (action < self.mask_fraction)
        to_random = selected & (action >= self.mask_fraction) & (action < self.mask_fraction + self.random_fraction)
        pick = torch.randint(len(self.gene_ids), ids.shape, generator=generator)
        masked = torch.where(to_mask, torch.full_like(ids, self.mask_id), ids)
        masked = torch.where(to_random, self.gene_ids[pick], masked)
        return {"input_ids": masked, "attention_mask": batch["attention_mask"], "labels": labels}

    def __call__(self, cells, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Pad then mask (the two steps in one, for callers that need no separation)."""
        return self.mask(self.pad(cells), generator)


def masking_generator(seed: int, *key: int) -> torch.Generator:
    """A torch generator seeded from ``seed`` and a position key (e.g. epoch, batch, rank).

    numpy's SeedSequence mixes the key into well-separated streams, so neighbouring batches and
    ranks never share masks.
    """
    state = np.random.SeedSequence([seed, *key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
