"""`root/train/<class>/*` and `root/test/<class>/*`: the layout the reference code used.

One class list across train and test: a class is its folder name, and each split's ClassLabel names
its classes by those names, so `int2str` gives the same name for the same class in either split. The
label *numbers* are 0..C-1 per split, like every other dataset, rather than one ClassLabel over the
union: the training head has one output per training class and the validation carve-out picks among
them, so test-only classes in the training label space would be dead head outputs and could be drawn
as validation classes with no images; evaluation compares labels only within a split, so a shared
numbering would buy nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from autolr.data.build import Listing
from autolr.errors import AutolrError

log = logging.getLogger("autolr.data")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def list_imagefolder(root: str) -> Listing:
    """Image files per class folder of train/ and test/."""
    if not root:
        raise AutolrError("data.name = 'imagefolder' needs data.root = a folder with train/ and test/")
    folder = Path(root).expanduser().resolve()
    scans = {split: _scan(folder, split) for split in ("train", "test")}
    names = sorted(set(scans["train"]) | set(scans["test"]))
    index = {name: i for i, name in enumerate(names)}
    both = set(scans["train"]) & set(scans["test"])
    if both:
        log.warning("imagefolder: %d classes are in both train/ and test/ (%s): the split is not class-disjoint",
                    len(both), ", ".join(sorted(both)[:5]))
    splits = {s: [(f, index[c]) for c in sorted(classes) for f in classes[c]] for s, classes in scans.items()}
    return Listing("imagefolder", folder, splits, dict(enumerate(names)))


def _scan(folder: Path, split: str) -> dict[str, list[str]]:
    where = folder / split
    if not where.is_dir():
        raise AutolrError(f"data.root = {str(folder)!r}: missing {where}/ (expected train/<class>/*, test/<class>/*)")
    classes = {
        d.name: sorted(str(f) for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        for d in sorted(where.iterdir()) if d.is_dir()
    }
    empty = [c for c, files in classes.items() if not files]
    if not classes or empty:
        raise AutolrError(f"{where}: no images in " + (", ".join(empty[:5]) if empty else "any class folder"))
    return classes
