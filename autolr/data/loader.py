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
from torch.utils.data import DataLoader, Dataset

from autolr.data.sampler import ClassBalancedBatchSampler, EpochSampler, sample_seed
from autolr.errors import AutolrError

if TYPE_CHECKING:
    import datasets


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
