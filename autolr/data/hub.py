"""CUB and Cars from a Hugging Face hub copy (`data.hub_id`), rebuilt into the class-disjoint split.

`data.hub_id` names a dataset repository on the hub, or a local folder laid out as one (parquet files
under data/, e.g. after `hf download --repo-type dataset ID --local-dir DIR`). Only the splits each
dataset module names in HUB_SPLITS are read (and downloaded): any other split of the copy is named in
the log and ignored, never pooled. Hub copies carry the classification split (every class in both train
and test): those splits are pooled and re-cut by class id (CUB 1-100 / 101-200, Cars 1-98 / 99-196); the
known split sizes then confirm that the copy's class order is the official one. SOP has no hub copy, and
In-shop copies lack the query/gallery partition: those two come only from their archives (data.root).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from autolr.data import cars, cub
from autolr.data.build import labels_of, subset
from autolr.data.protocol import DOWNLOADS, TRAIN_CLASSES, check_counts, split_counts
from autolr.errors import AutolrError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger("autolr.data")

# Parquet copies with an image column and a 200/196-class label column in the official class order.
HUB_DEFAULTS = {"cub200": cub.HUB_ID, "cars196": cars.HUB_ID}
HUB_SPLITS = {"cub200": cub.HUB_SPLITS, "cars196": cars.HUB_SPLITS}
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
    pooled = _pool(download_splits(name, hub_id, HUB_SPLITS[name]), hub_id)
    splits = _class_disjoint(name, pooled, hub_id)
    check_counts(name, split_counts(splits), strict_counts)
    return splits


def local_copy(hub_id: str) -> Path | None:
    """The folder `hub_id` names, if it is one (as `datasets.load_dataset` itself prefers a folder)."""
    path = Path(hub_id).expanduser()
    if path.is_dir():
        return path.resolve()
    if hub_id.startswith(("/", "./", "../", "~")):
        raise AutolrError(f"data.hub_id = {hub_id!r} is neither a folder nor a hub id (owner/name): give an"
                          " existing folder laid out as a hub dataset (parquet files under data/) or a hub id")
    return None


def source_of(hub_id: str) -> str:
    """What a bundle's `source` says (and a prepared copy records): hub:<id> or hub:<absolute folder>."""
    local = local_copy(hub_id)
    return f"hub:{local or hub_id}"


def download_splits(name: str, hub_id: str, splits: tuple[str, ...]) -> datasets.DatasetDict:
    """The copy's `splits` only (other splits named in the log, not downloaded), failing fast with the fix."""
    import datasets
    from huggingface_hub import constants

    local = local_copy(hub_id)
    if local is None and not constants.HF_HUB_OFFLINE:
        _probe(name, hub_id)
    path = str(local or hub_id)
    try:
        files = _split_files(path, local is not None)
        if files is not None:  # check before anything is downloaded
            _check_splits(name, hub_id, list(files), splits)
        loaded = datasets.load_dataset(path, data_files={s: files[s] for s in splits} if files else None)
    except AutolrError:
        raise
    except Exception as e:  # offline, missing, gated or unreadable: each message says its fix
        raise AutolrError(_failure(name, hub_id, local, e)) from None
    if files is None:  # a copy read back from the cache offline: its splits are known only now
        _check_splits(name, hub_id, list(loaded), splits)
    return datasets.DatasetDict({s: loaded[s] for s in splits})


def _split_files(path: str, local: bool) -> dict[str, list[str]] | None:
    """Split name -> data files, as `datasets.load_dataset(path)` maps them; None when it cannot say yet."""
    import datasets
    from datasets.data_files import get_data_patterns

    if local:  # from the file names (data/<split>-00000-of-00002.parquet), so a partial download still reads
        return {str(s): patterns for s, patterns in get_data_patterns(path).items()}
    files = datasets.load_dataset_builder(path).config.data_files  # the card's configs, or the file names
    return {s: list(f) for s, f in files.items()} if files else None


def _check_splits(name: str, hub_id: str, found: list[str], splits: tuple[str, ...]) -> None:
    """The copy must have `splits`; its other splits are named in the log and left alone."""
    missing = [s for s in splits if s not in found]
    if missing:
        raise AutolrError(f"data.hub_id = {hub_id!r} has splits {', '.join(found)}; {name} reads"
                          f" {', '.join(splits)}: not a copy of this dataset, or an incomplete download")
    ignored = [s for s in found if s not in splits]
    if ignored:
        log.info("%s: data.hub_id = %r also has the splits %s; reading only %s (the others are ignored)",
                 name, hub_id, ", ".join(ignored), " and ".join(splits))


def _failure(name: str, hub_id: str, local: Path | None, e: Exception) -> str:
    what = f"data.hub_id = {hub_id!r} cannot be loaded ({type(e).__name__}: {str(e)[:200]})"
    if local is not None:
        return what + ": a local copy needs the parquet files of its splits, e.g. data/train-00000-of-00001.parquet"
    if _is_gated(e):
        return _gated(name, hub_id)
    return what + _OFFLINE_HINT.format(download=DOWNLOADS[name])


_OFFLINE_HINT = (
    ". Offline (HF_HUB_OFFLINE=1) only a copy already in the Hugging Face cache loads: download the"
    " archive from {download} and set data.root instead"
)


def _is_gated(e: BaseException | None) -> bool:
    """huggingface_hub raises GatedRepoError; datasets re-raises it as DatasetNotFoundError('... gated ...')."""
    from huggingface_hub.errors import GatedRepoError

    seen = 0
    while e is not None and seen < 5:
        if isinstance(e, GatedRepoError) or (type(e).__name__ == "DatasetNotFoundError" and "gated" in str(e)):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _gated(name: str, hub_id: str) -> str:
    return (f"data.hub_id = {hub_id!r} is a gated dataset: log in with `hf auth login` and accept its terms on"
            f" https://huggingface.co/datasets/{hub_id}, or download the archive from {DOWNLOADS[name]} and set"
            " data.root")


def _probe(name: str, hub_id: str) -> None:
    """One short request, so that a missing network fails in seconds rather than after retries."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().dataset_info(hub_id, timeout=10)
    except GatedRepoError:  # a subclass of RepositoryNotFoundError: test it first
        raise AutolrError(_gated(name, hub_id)) from None
    except RepositoryNotFoundError:
        raise AutolrError(f"data.hub_id = {hub_id!r}: no such dataset on the hub (or it is private)") from None
    except Exception as e:
        raise AutolrError(
            f"data.hub_id = {hub_id!r}: the hub cannot be reached ({type(e).__name__}). Set HF_HUB_OFFLINE=1"
            f" to use a copy in the Hugging Face cache, or download the archive from {DOWNLOADS[name]} and"
            " set data.root"
        ) from None


def _pool(parts: datasets.DatasetDict, hub_id: str) -> datasets.Dataset:
    """The splits read from the copy in one, reduced to columns image (RGB on decode) and label."""
    import datasets

    first = next(iter(parts.values()))
    image, label = image_label_columns(first.features, hub_id)
    pooled = datasets.concatenate_datasets([p.select_columns([image, label]) for p in parts.values()])
    pooled = pooled.rename_columns({c: n for c, n in ((image, "image"), (label, "label")) if c != n})
    return pooled.cast_column("image", datasets.Image(mode="RGB"))


def image_label_columns(features: datasets.Features, hub_id: str) -> tuple[str, str]:
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
