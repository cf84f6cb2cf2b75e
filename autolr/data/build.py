"""From an archive's file lists to `datasets` splits: unreadable files, label spaces, size checks.

Every archive reader (cub.py, cars.py, sop.py, inshop.py, imagefolder.py) returns a `Listing`; this
module turns it into splits whose `image` column holds absolute file paths, so `split[i]` opens and
decodes one file, lazily, in whichever DataLoader worker asks for it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from autolr.data.files import describe_bad, find_bad_files
from autolr.data.protocol import check_counts, split_counts
from autolr.errors import AutolrError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger("autolr.data")


@dataclass
class Listing:
    """Image paths and class keys per split, as an archive's list files give them."""

    name: str
    folder: Path  # the dataset's folder, found from data.root
    splits: dict[str, list[tuple[str, Hashable]]]  # split -> [(absolute path, class key)]
    names: dict[Hashable, str] = field(default_factory=dict)  # class key -> class name (default: str(key))
    shared: tuple[str, ...] = ()  # splits with one label space (In-shop's query and gallery)


def build_splits(listing: Listing, *, strict_counts: bool, skip_corrupt: bool) -> dict[str, datasets.Dataset]:
    """Check the files, give each split labels 0..C-1 in class-key order, check the sizes."""
    listing, skipped = drop_bad_files(listing, skip_corrupt)
    spaces = _label_spaces(listing)
    splits = {s: _split(rows, spaces[s], listing.names) for s, rows in listing.splits.items()}
    check_counts(listing.name, split_counts(splits), strict_counts, skipped)
    return splits


def drop_bad_files(listing: Listing, skip_corrupt: bool) -> tuple[Listing, int]:
    """An error naming the missing or broken files, or (with skip_corrupt) the listing without them."""
    paths = [p for rows in listing.splits.values() for p, _ in rows]
    bad = find_bad_files(paths)
    if not bad:
        return listing, 0
    what = f"{listing.name}: {len(bad)} of {len(paths)} images are missing or unreadable: {describe_bad(bad)}"
    if not skip_corrupt:
        raise AutolrError(f"{what}. Re-extract the archive, or set data.skip_corrupt = true to skip them")
    log.warning("%s; skipping them (data.skip_corrupt = true)", what)
    kept = {s: [(p, k) for p, k in rows if p not in bad] for s, rows in listing.splits.items()}
    return replace(listing, splits=kept), len(bad)


def _label_spaces(listing: Listing) -> dict[str, list[Hashable]]:
    """Each split's sorted class keys; splits in `shared` get the union of theirs."""
    spaces = {s: sorted({k for _, k in rows}) for s, rows in listing.splits.items()}
    union = sorted({k for s in listing.shared for k in spaces[s]})
    return {s: union if s in listing.shared else keys for s, keys in spaces.items()}


def _split(rows: list[tuple[str, Hashable]], keys: list[Hashable], names: dict) -> datasets.Dataset:
    label = {k: i for i, k in enumerate(keys)}
    return make_split([p for p, _ in rows], [label[k] for _, k in rows], [names.get(k, str(k)) for k in keys])


def make_split(images: Sequence, labels: Sequence[int], class_names: Sequence[str]) -> datasets.Dataset:
    """A split with columns image (decoded to RGB on access: grey, CMYK, palette all become RGB) and label."""
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(mode="RGB"), "label": datasets.ClassLabel(names=list(class_names))}
    )
    return datasets.Dataset.from_dict({"image": list(images), "label": list(labels)}, features=features)


def labels_of(split: datasets.Dataset) -> list[int]:
    """The label column as a list, without decoding any image."""
    return split.with_format("arrow")["label"].to_pylist()


def subset(split: datasets.Dataset, keep: Sequence[int]) -> datasets.Dataset:
    """The rows whose label is in `keep`, relabelled 0..len(keep)-1 in the order of `keep`.

    Images are not decoded; a split stored on disk (a prepared copy, a hub download) gets a cache
    file next to it, reused by later runs with the same classes.
    """
    new = {old: i for i, old in enumerate(keep)}
    rows = [i for i, label in enumerate(labels_of(split)) if label in new]
    features = split.features.copy()
    features["label"] = _class_label([_class_name(split, k) for k in keep])
    with quiet_progress():
        return split.select(rows).map(
            _Relabel(new), input_columns="label", batched=True, features=features, desc="relabel"
        )


class _Relabel:
    """A picklable label map (map() fingerprints it, so equal maps reuse the same cache file)."""

    def __init__(self, new: dict[int, int]):
        self.new = new

    def __call__(self, labels: list[int]) -> dict[str, list[int]]:
        return {"label": [self.new[x] for x in labels]}


def _class_name(split: datasets.Dataset, label: int) -> str:
    feature = split.features["label"]
    return feature.int2str(label) if hasattr(feature, "int2str") else str(label)  # hub copies: plain ints


def _class_label(names: list[str]):
    import datasets

    return datasets.ClassLabel(names=names)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No progress bars for quick internal maps (a training log is no place for them)."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()
