"""CUB and Cars from a Hugging Face hub copy (`data.hub_id`), rebuilt into the class-disjoint split.

Hub copies carry the classification split (every class in both train and test). Their splits are
pooled and re-cut by class id (CUB 1-100 / 101-200, Cars 1-98 / 99-196); the known split sizes then
confirm that the copy's class order is the official one. SOP has no hub copy, and In-shop copies lack
the query/gallery partition: those two come only from their archives (data.root).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from autolr.data._build import labels_of, subset
from autolr.data.protocol import DOWNLOADS, TRAIN_CLASSES, check_counts, split_counts
from autolr.errors import AutolrError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger("autolr.data")

# Parquet copies with an image column and a 200/196-class label column in the official class order.
HUB_DEFAULTS = {"cub200": "bentrevett/caltech-ucsd-birds-200-2011", "cars196": "tanganke/stanford_cars"}
NUM_CLASSES = {"cub200": 200, "cars196": 196}
NO_HUB_COPY = {
    "sop": "Stanford Online Products has no usable hub copy",
    "inshop": "In-shop has no usable hub copy (those on the hub lack the official query/gallery partition)",
}


def load_hub(name: str, hub_id: str, *, strict_counts: bool) -> dict[str, datasets.Dataset]:
    """{"train", "test"} class-disjoint splits from the hub copy `hub_id` (default: HUB_DEFAULTS)."""
    if name in NO_HUB_COPY:
        raise AutolrError(f"{NO_HUB_COPY[name]}: download it from {DOWNLOADS[name]} and set data.root")
    if name not in HUB_DEFAULTS:
        raise AutolrError(f"data.hub_id is for cub200 and cars196; data.name = {name!r} reads data.root")
    hub_id = hub_id or HUB_DEFAULTS[name]
    log.info("%s: loading the hub copy %s and rebuilding the class-disjoint split", name, hub_id)
    pooled = _pool(_download(name, hub_id), hub_id)
    splits = _class_disjoint(name, pooled, hub_id)
    check_counts(name, split_counts(splits), strict_counts)
    return splits


def _download(name: str, hub_id: str) -> datasets.DatasetDict:
    """The hub dataset, failing fast with the fix when the hub cannot be reached."""
    import datasets
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        _probe(name, hub_id)
    try:
        return datasets.load_dataset(hub_id)
    except Exception as e:  # offline, missing or unreadable: all have the same fix
        raise AutolrError(
            f"data.hub_id = {hub_id!r} cannot be loaded ({type(e).__name__}: {str(e)[:200]})"
            + _OFFLINE_HINT.format(download=DOWNLOADS[name])
        ) from None


_OFFLINE_HINT = (
    ". Offline (HF_HUB_OFFLINE=1) only a copy already in the Hugging Face cache loads: download the"
    " archive from {download} and set data.root instead"
)


def _probe(name: str, hub_id: str) -> None:
    """One short request, so that a missing network fails in seconds rather than after retries."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        HfApi().dataset_info(hub_id, timeout=10)
    except RepositoryNotFoundError:
        raise AutolrError(f"data.hub_id = {hub_id!r}: no such dataset on the hub (or it is private)") from None
    except Exception as e:
        raise AutolrError(
            f"data.hub_id = {hub_id!r}: the hub cannot be reached ({type(e).__name__}). Set HF_HUB_OFFLINE=1"
            f" to use a copy in the Hugging Face cache, or download the archive from {DOWNLOADS[name]} and"
            " set data.root"
        ) from None


def _pool(parts: datasets.DatasetDict, hub_id: str) -> datasets.Dataset:
    """All splits of the copy in one, reduced to columns image (RGB on decode) and label."""
    import datasets

    first = next(iter(parts.values()))
    image, label = _columns(first.features, hub_id)
    pooled = datasets.concatenate_datasets([p.select_columns([image, label]) for p in parts.values()])
    pooled = pooled.rename_columns({c: n for c, n in ((image, "image"), (label, "label")) if c != n})
    return pooled.cast_column("image", datasets.Image(mode="RGB"))


def _columns(features: datasets.Features, hub_id: str) -> tuple[str, str]:
    """The image column and the class-label column (by type; else the one named 'label')."""
    import datasets

    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    labels = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
    labels = labels or [c for c in ("label", "labels") if c in features]
    if not images or not labels:
        raise AutolrError(f"data.hub_id = {hub_id!r}: no image and class-label columns in {list(features)}")
    return images[0], labels[0]


def _class_disjoint(name: str, pooled: datasets.Dataset, hub_id: str) -> dict[str, datasets.Dataset]:
    classes = sorted(set(labels_of(pooled)))
    if len(classes) != NUM_CLASSES[name]:
        raise AutolrError(
            f"data.hub_id = {hub_id!r} has {len(classes)} classes, {name} has {NUM_CLASSES[name]}:"
            " not a copy of this dataset"
        )
    cut = TRAIN_CLASSES[name]
    return {"train": subset(pooled, classes[:cut]), "test": subset(pooled, classes[cut:])}
