"""Which images each step trains on: `EpochSampler` (a seeded shuffle, sharded over processes) and
class-balanced batches for metric-learning losses, P classes x m images per batch (data.samples_per_class).

Both yield (epoch, index) pairs, and `sample_seed` turns such a pair into the seed of its augmentation.
The balanced batch sampler yields lists of (epoch, index) like `EpochSampler`: the batches are a function of
(seed, epoch) alone, so every AutoLR trial of an epoch and a resumed run see the same ones, and under
DDP every rank builds the same list and takes every `world`-th batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from autolr.errors import AutolrError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (seed, epoch, index) (a splitmix-style hash: neighbours are uncorrelated)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    return x >> 1


class EpochSampler(Sampler):
    """Yields (epoch, index); the order is a permutation seeded by (seed, epoch), sharded by rank.

    Each rank takes every `world`-th index of the same permutation. Training (shuffled) drops the last
    `n % world` indices, so that W ranks at batch B/W take exactly the steps one process takes at B
    (floor(floor(n/W)/(B/W)) = floor(n/B)); evaluation pads by wrapping, as torch's DistributedSampler
    does, and the gather trims the padding.
    """

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()
        total = len(self) * self.world
        order = order[:total] + order[: max(0, total - len(order))]
        return iter((self.epoch, i) for i in order[self.rank :: self.world])

    def __len__(self) -> int:
        return self.n // self.world if self.shuffle else -(-self.n // self.world)


_BALANCED_STREAM = -2  # sample_seed's index for this sampler's RNG (EpochSampler uses -1)


class ClassBalancedBatchSampler(Sampler):
    """Batches of `batch_size // m` distinct classes with m images each.

    An epoch has as many batches as plain batching would (len(labels) // batch_size, rounded down to a
    multiple of `world`). Each class's images are drawn without replacement from a shuffled queue that
    refills when empty, so every image is seen about equally often; a class with fewer than m images
    repeats some of them.
    """

    def __init__(self, labels: Sequence[int], m: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        _check(labels, m, batch_size)
        self.m, self.batch_size, self.seed, self.rank, self.world = m, batch_size, seed, rank, world
        self.epoch = 0
        by_class = defaultdict(list)
        for index, label in enumerate(labels):
            by_class[int(label)].append(index)
        self.classes = [by_class[c] for c in sorted(by_class)]
        self.total = len(labels) // batch_size // world * world  # batches over all ranks

    @classmethod
    def for_split(cls, split, m: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        """The sampler for a `datasets` split (its label column is read without decoding images)."""
        from autolr.data.build import labels_of

        return cls(labels_of(split), m, batch_size, seed, rank, world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.total // self.world

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches = self.batches(self.epoch)
        return iter([[(self.epoch, i) for i in b] for b in batches[self.rank :: self.world]])

    def batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of `epoch`, as dataset indices."""
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, _BALANCED_STREAM))
        queues: list[list[int]] = [[] for _ in self.classes]
        order: list[int] = []
        per_batch = self.batch_size // self.m
        batches = []
        while len(batches) < self.total:
            if len(order) < per_batch:  # a fresh class order; leftovers dropped so no class repeats in a batch
                order = torch.randperm(len(self.classes), generator=g).tolist()
            picked, order = order[:per_batch], order[per_batch:]
            batches.append([i for c in picked for i in self._take(c, queues, g)])
        return batches

    def _take(self, c: int, queues: list[list[int]], g: torch.Generator) -> list[int]:
        taken = []
        while len(taken) < self.m:
            if not queues[c]:
                images = self.classes[c]
                queues[c] = [images[j] for j in torch.randperm(len(images), generator=g).tolist()]
            taken.append(queues[c].pop())
        return taken


def _check(labels: Sequence[int], m: int, batch_size: int) -> None:
    if m < 1 or batch_size % m:
        raise AutolrError(f"data.batch_size = {batch_size} is not a multiple of data.samples_per_class = {m}:"
                          f" use e.g. batch_size = {max(m, batch_size // m * m)}")
    classes = len(set(int(x) for x in labels))
    if batch_size // m > classes:
        raise AutolrError(f"data.batch_size / data.samples_per_class = {batch_size // m} classes per batch, but"
                          f" the training split has {classes}: lower the batch size or raise samples_per_class")
