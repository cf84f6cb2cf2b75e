"""Datasets as Hugging Face `datasets` objects, with the class-disjoint retrieval protocol.

`load_data(cfg)` returns a `DataBundle`: a training split (labels 0..C-1), and either a test split
(all-vs-all retrieval) or a query and a gallery split (In-shop), plus the dataset's standard K set.
CIFAR-10/100 are classification sets instead (`task = "classification"`): the test split has the
training classes and is scored by accuracy. Sources, first found wins: a copy made by `autolr data
prepare`; the official archive in data.root; a hub copy (data.hub_id: CUB, Cars and CIFAR; a hub id or
a local folder laid out as a hub dataset). `check_source(cfg)` says, without reading an image, whether
that source is there. Nothing heavy is imported until a dataset is loaded.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autolr.data.protocol import KNOWN_SIZES, STANDARD_KS, recall_ks, task_of
from autolr.errors import AutolrError

if TYPE_CHECKING:
    import datasets

    from autolr.recipe import DataConfig

__all__ = ["DataBundle", "KNOWN_SIZES", "STANDARD_KS", "check_source", "load_data", "read_source"]
log = logging.getLogger("autolr.data")

# data.name -> the function that lists its archive on disk ("module:function", imported on use).
ARCHIVES = {
    "cub200": "autolr.data.cub:list_cub",
    "cars196": "autolr.data.cars:list_cars",
    "sop": "autolr.data.sop:list_sop",
    "inshop": "autolr.data.inshop:list_inshop",
    "imagefolder": "autolr.data.imagefolder:list_imagefolder",
}
# data.name -> the function that reads its binary archive (or hub copy) straight into splits.
READERS = {"cifar10": "autolr.data.cifar:read_cifar", "cifar100": "autolr.data.cifar:read_cifar"}


@dataclass
class DataBundle:
    name: str
    train: datasets.Dataset
    test: datasets.Dataset | None = None  # all-vs-all evaluation
    query: datasets.Dataset | None = None  # query-vs-gallery evaluation (In-shop)
    gallery: datasets.Dataset | None = None
    recall_at: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    source: str = ""  # where it was read from: a folder, a hub id or a prepared copy
    eval_on: str = "test"  # "val" when `test` holds the validation classes (selection runs)
    task: str = "retrieval"  # or "classification": `test` has the training classes, scored by accuracy

    @property
    def num_classes(self) -> int:
        return self.train.features["label"].num_classes

    def eval_splits(self) -> dict[str, datasets.Dataset]:
        """The splits evaluation embeds: {"test"} or {"query", "gallery"}."""
        if self.test is not None:
            return {"test": self.test}
        return {"query": self.query, "gallery": self.gallery}

    def splits(self) -> dict[str, datasets.Dataset]:
        """Every split present, by name."""
        named = {"train": self.train, "test": self.test, "query": self.query, "gallery": self.gallery}
        return {k: v for k, v in named.items() if v is not None}


def load_data(cfg: DataConfig, *, seed: int = 0, for_selection: bool = False, min_side: int = 0) -> DataBundle:
    """The dataset named in the recipe, ready for `make_loader`.

    A plain run trains on all training classes and evaluates the test split. `for_selection=True`
    trains on the training classes minus a validation split carved out by class (seeded by `seed`,
    normally train.seed) and evaluates that split. `min_side`: the test transform's resize
    (`transforms.test_resize(size)`); the smallest prepared copy at least that large is read, and
    with 0 (unknown) the largest.
    """
    bundle = _load(cfg, min_side)
    if for_selection:
        from autolr.data.split import selection_bundle

        return selection_bundle(bundle, cfg, seed)
    return bundle


def _load(cfg: DataConfig, min_side: int) -> DataBundle:
    if cfg.name == "digits":
        from autolr.data.digits import load_digits

        _warn_unused(cfg)
        return load_digits()
    from autolr.data.prepare import find_prepared, load_prepared

    prepared = find_prepared(cfg, min_side)
    if prepared is not None:
        return bundle_of(cfg.name, load_prepared(prepared), source=str(prepared))
    splits, source = read_source(cfg)
    return bundle_of(cfg.name, splits, source)


def read_source(cfg: DataConfig) -> tuple[dict[str, datasets.Dataset], str]:
    """The splits from data.root (the archive layout) or the hub, never from a prepared copy."""
    if cfg.name in READERS:
        return _imported(READERS[cfg.name])(cfg)
    if cfg.root or cfg.name == "imagefolder":
        _warn_unused(cfg)
        listing = _archive_lister(cfg.name)(cfg.root)
        from autolr.data.build import build_splits

        splits = build_splits(listing, strict_counts=cfg.strict_counts, skip_corrupt=cfg.skip_corrupt)
        log.info("%s: read from %s", cfg.name, listing.folder)
        return splits, str(listing.folder)
    from autolr.data.hub import HUB_DEFAULTS, load_hub, source_of

    hub_id = cfg.hub_id or HUB_DEFAULTS.get(cfg.name, "")
    return load_hub(cfg.name, hub_id, strict_counts=cfg.strict_counts), source_of(hub_id)


def _warn_unused(cfg: DataConfig) -> None:
    """A source the recipe sets but this dataset does not read is a warning, never silently dropped."""
    if cfg.name == "digits":
        for key, value in (("root", cfg.root), ("hub_id", cfg.hub_id)):
            if value:
                log.warning("digits: data.%s = %r is ignored: the digits are built in (scikit-learn's copy);"
                            " remove it, or set data.name to the dataset it holds", key, value)
    elif cfg.hub_id and cfg.root:
        log.warning("%s: data.hub_id = %r is ignored: data.root is set (%r) and is read instead;"
                    " remove one of them", cfg.name, cfg.hub_id, cfg.root)
    elif cfg.hub_id and cfg.name == "imagefolder":
        log.warning("imagefolder: data.hub_id = %r is ignored: imagefolder reads only data.root", cfg.hub_id)


def check_source(cfg: DataConfig) -> None:
    """An AutolrError if the data this recipe needs is not there; reads list files, never an image.

    Cheap enough for `autolr validate`: a prepared copy, a built-in set or a remote hub id passes (a hub
    id is not looked up: that needs the network); data.root must hold the archive's index files (they
    are parsed, as a run parses them); a local hub copy must be a folder; SOP and In-shop need data.root.
    """
    if cfg.name == "digits":
        _warn_unused(cfg)
        return
    from autolr.data.prepare import find_prepared

    if find_prepared(cfg) is not None:
        return
    if cfg.name in READERS:
        from autolr.data.cifar import check_cifar

        return check_cifar(cfg)
    if cfg.root or cfg.name == "imagefolder":
        _warn_unused(cfg)
        _archive_lister(cfg.name)(cfg.root)
        return
    from autolr.data.hub import NO_HUB_COPY, local_copy

    if cfg.name in NO_HUB_COPY:
        from autolr.data.protocol import DOWNLOADS

        raise AutolrError(f"{NO_HUB_COPY[cfg.name]}: download it from {DOWNLOADS[cfg.name]} and set data.root")
    local_copy(cfg.hub_id)  # a path that is not a folder is an error; a hub id is looked up by the run


def _archive_lister(name: str):
    if name not in ARCHIVES:
        raise AutolrError(f"data.name = {name!r} has no archive reader; choose one of {', '.join(ARCHIVES)}")
    return _imported(ARCHIVES[name])


def _imported(target: str):
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def bundle_of(name: str, splits: dict[str, datasets.Dataset], source: str = "") -> DataBundle:
    """A bundle from named splits ({"train", "test"} or {"train", "query", "gallery"})."""
    return DataBundle(
        name=name, train=splits["train"], test=splits.get("test"), query=splits.get("query"),
        gallery=splits.get("gallery"), recall_at=recall_ks(name), source=source, task=task_of(name),
    )
