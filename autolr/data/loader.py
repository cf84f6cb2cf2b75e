"""DataLoaders whose order and augmentation are functions of (seed, epoch, sample index).

That makes every trial of an AutoLR epoch see the same batches and the same flips, and makes a resumed
run identical to an uninterrupted one, with any number of (persistent) workers: nothing depends on a
worker's RNG state.

Images are still decoded lazily in the DataLoader workers, but through a small torch `Dataset` wrapper
rather than `datasets`' `with_transform`: a `with_transform` function sees only the rows, not the epoch,
so it could not seed each sample's augmentation from (seed, epoch, index).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from autolr.errors import AutolrError

if TYPE_CHECKING:
    import datasets


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (seed, epoch, index) (a splitmix-style hash: neighbours are uncorrelated)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    return x >> 1


class TransformedSplit(Dataset):
    """A `datasets` split indexed by (epoch, index); the transform's randomness is seeded from both."""

    def __init__(self, split: datasets.Dataset, transform: Callable, seed: int):
        self.split, self.transform, self.seed = split, transform, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        try:
            row = self.split[index]
            image = row["image"].convert("RGB")  # grey, CMYK and palette images become RGB
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...: a file the pre-check passed
            raise AutolrError(_load_error(self.split, index, e)) from None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.transform(image), row["label"]


def _load_error(split: datasets.Dataset, index: int, error: Exception) -> str:
    """What failed (the file, or the row of a copy that stores its images) and what fixes it."""
    cell = split.select_columns(["image"]).with_format("arrow")[index]["image"][0].as_py() or {}
    why = f"{type(error).__name__}: {error}"
    if cell.get("bytes"):  # a prepared copy or a hub copy: the images are inside the dataset's files
        return (f"cannot decode image {index} of the split (stored in the dataset, from {cell.get('path')};"
                f" {why}): the stored copy is damaged; make it again with `autolr data prepare` (a hub copy:"
                " delete it from the Hugging Face cache and download it again)")
    # The raw pre-check reads only each file's end, so damage inside a file passes it; `prepare` decodes
    # every image.
    return (f"cannot read {cell.get('path')} ({why}): replace the file, or run `autolr data prepare NAME"
            " --root PATH --skip-corrupt` once, which decodes every image and leaves out those that fail"
            " (training then reads that copy; data.skip_corrupt = true alone skips only files that are"
            " missing, empty or cut short)")


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


def make_loader(
    split: datasets.Dataset,
    transform: Callable,
    *,
    batch_size: int,
    workers: int,
    seed: int,
    train: bool,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
    samples_per_class: int = 0,
) -> DataLoader:
    """Training loaders shuffle and drop the last partial batch (BatchNorm needs > 1 sample).

    The loader's own generator keeps worker seeding off the global RNG, so dropout masks after a resume
    match those of an uninterrupted run.
    """
    if train and samples_per_class:
        from autolr.data.sampler import ClassBalancedBatchSampler

        batching = {"batch_sampler": ClassBalancedBatchSampler.for_split(split, samples_per_class, batch_size, seed, rank, world)}
    else:
        sampler = EpochSampler(len(split), seed, shuffle=train, rank=rank, world=world)
        batching = {"batch_size": batch_size, "sampler": sampler, "drop_last": train}
    return _Loader(
        TransformedSplit(split, transform, seed),
        num_workers=workers,
        pin_memory=pin_memory,
        **batching,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


class _Loader(DataLoader):
    """A DataLoader whose workers' user errors arrive as the worker raised them.

    torch re-raises a worker's exception with the worker's whole traceback as its message; an
    `AutolrError` gets its own one-line message back, for the CLI's one red line.
    """

    def __iter__(self) -> Iterator:
        try:
            yield from super().__iter__()
        except AutolrError as e:
            text = str(e)
            if not text.startswith("Caught AutolrError"):
                raise
            raise AutolrError(text.rsplit("AutolrError: ", 1)[-1].strip()) from None
