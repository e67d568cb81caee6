"""The length-grouped distributed sampler: exact coverage, grouping, determinism, resumption."""

from __future__ import annotations

import numpy as np
import pytest

from cellfate.foundation.sampler import LengthGroupedBatchSampler

LENGTHS = np.random.default_rng(0).integers(1, 2049, size=1003)


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_every_cell_exactly_once_per_epoch_across_ranks(world: int) -> None:
    indices = np.flatnonzero(np.arange(len(LENGTHS)) % 7 != 0)  # a subset, as after the held-out split
    samplers = [
        LengthGroupedBatchSampler(LENGTHS, 12, indices=indices, num_replicas=world, rank=r, seed=4, megabatch_batches=5)
        for r in range(world)
    ]
    for epoch in (0, 1):
        per_rank = [s.rank_batches(epoch) for s in samplers]
        assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(samplers[0])  # equal step counts
        seen = np.concatenate([np.concatenate([np.asarray(b, dtype=int) for b in batches]) for batches in per_rank])
        assert sorted(seen.tolist()) == indices.tolist()
        assert all(len(b) <= 12 for batches in per_rank for b in batches)


def test_batches_are_grouped_by_length_longest_first() -> None:
    sampler = LengthGroupedBatchSampler(LENGTHS, 10, seed=1, megabatch_batches=20)
    batches = sampler.rank_batches(0)
    lengths = [LENGTHS[b] for b in batches]
    assert lengths[0].max() == LENGTHS.max()  # the longest cell comes first
    spread = np.mean([lb.max() - lb.min() for lb in lengths])
    random_spread = np.mean([np.ptp(LENGTHS[np.random.default_rng(k).choice(len(LENGTHS), 10)]) for k in range(50)])
    assert spread < random_spread / 4


def test_ranks_get_cells_of_similar_length() -> None:
    a, b = (LengthGroupedBatchSampler(LENGTHS, 8, num_replicas=2, rank=r, seed=2).rank_batches(0) for r in (0, 1))
    gaps = [abs(LENGTHS[x].max() - LENGTHS[y].max()) for x, y in zip(a, b) if x and y]
    assert np.median(gaps) < 50


def test_deterministic_in_seed_and_epoch_and_resumable() -> None:
    make = lambda seed: LengthGroupedBatchSampler(LENGTHS, 16, seed=seed, megabatch_batches=4)  # noqa: E731
    assert make(0).rank_batches(3) == make(0).rank_batches(3)
    assert make(0).rank_batches(0) != make(0).rank_batches(1)
    assert make(0).rank_batches(0) != make(1).rank_batches(0)
    sampler = make(0)
    sampler.set_epoch(2, start=5)
    assert list(sampler) == make(0).rank_batches(2)[5:]
