"""Length-grouped, distributed, resumable batches of cell indices.

Cells differ a lot in length (a few hundred to 2,048 expressed genes), and a batch costs as much
as its longest cell. As in Geneformer, each epoch is shuffled, cut into mega-batches of up to
``megabatch_batches`` global batches, and each mega-batch is sorted by length (longest first), so
that batches hold cells of similar length. The batch that holds the longest cell of the epoch
comes first: if anything runs out of memory, it does so in the first step, not hours in.

Distributed: a global batch is ``batch_size x num_replicas`` consecutive cells of that sorted
order and rank ``r`` takes every ``num_replicas``-th cell starting at ``r``, so all ranks get
cells of the same length and every rank has the same number of batches (DDP needs equal step
counts). Every cell appears exactly once per epoch across the ranks: nothing is padded by
repetition or dropped, so the last global batch of an epoch may leave a rank with fewer cells,
or none (the training loop handles an empty batch).

The order depends only on (seed, epoch): no state besides the position, which the training
loop owns (a DataLoader prefetches ahead of what was trained on) and passes back on resume.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from cellfate.errors import CellfateError


class LengthGroupedBatchSampler:
    """Batches of corpus indices for one rank; use as a DataLoader ``batch_sampler``."""

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        megabatch_batches: int = 1000,
        shuffle: bool = True,
    ) -> None:
        """``lengths`` holds one length per corpus cell; ``indices`` the cells to draw from (all by default)."""
        if batch_size < 1 or num_replicas < 1 or megabatch_batches < 1:
            raise CellfateError(
                f"batch_size ({batch_size}), num_replicas ({num_replicas}) and megabatch_batches "
                f"({megabatch_batches}) must be at least 1"
            )
        if not 0 <= rank < num_replicas:
            raise CellfateError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.lengths = np.asarray(lengths)
        self.indices = np.arange(len(self.lengths)) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(self.indices) == 0:
            raise CellfateError("no cells to sample batches from")
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.megabatch_batches = megabatch_batches
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank."""
        return -(-len(self.indices) // (self.batch_size * self.num_replicas))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch to iterate and the batch to begin at (``start`` > 0 when resuming)."""
        if not 0 <= start <= len(self):
            raise CellfateError(f"batch position {start} outside epoch of {len(self)} batches")
        self.epoch = epoch
        self.start = start

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """Every global batch of ``epoch`` (positions into ``indices``), in training order."""
        n = len(self.indices)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        lengths = self.lengths[self.indices]
        width = self.batch_size * self.num_replicas
        mega = width * self.megabatch_batches
        batches: list[np.ndarray] = []
        for begin in range(0, n, mega):
            chunk = order[begin : begin + mega]
            chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + width] for i in range(0, len(chunk), width))
        # Sorted chunks start with their longest cell: bring the epoch's longest batch to the front.
        longest = int(np.argmax([lengths[b[0]] for b in batches]))
        batches.insert(0, batches.pop(longest))
        return batches

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of corpus indices for ``epoch`` (some may be empty at the very end)."""
        return [self.indices[b[self.rank :: self.num_replicas]].tolist() for b in self.global_batches(epoch)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.rank_batches(self.epoch)[self.start :]
