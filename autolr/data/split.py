"""The validation split for selection runs: whole classes carved out of the training classes.

Selection (pruning depth, sweep cells, oracle candidates) must not look at the test split, so it trains
on the remaining training classes and scores on these held-out ones (method.md section 2). A
classification set (CIFAR) is scored on its training classes, so there the validation split is 10% of
each class's training images instead (CIFAR-10: 45,000 / 5,000, as SILO's experiments hold out).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING

from autolr.data.build import labels_of, subset
from autolr.errors import AutolrError

if TYPE_CHECKING:
    from autolr.data import DataBundle
    from autolr.recipe import DataConfig

log = logging.getLogger("autolr.data")
MIN_VAL_CLASSES = 2
MIN_TRAIN_CLASSES = 4  # with fewer, no validation split: 2 held out would leave < 2 to train on
VAL_IMAGES = 0.1  # classification: the share of each class's training images held out


def validation_classes(num_classes: int, fraction: float, seed: int) -> list[int]:
    """The labels held out: round(fraction x C), at least 2, chosen by `seed`; [] below 4 classes."""
    if num_classes < MIN_TRAIN_CLASSES or fraction <= 0:
        return []
    n = min(max(MIN_VAL_CLASSES, round(fraction * num_classes)), num_classes - MIN_VAL_CLASSES)
    # A private generator: the same classes for a seed on every machine and every process of a DDP run.
    return sorted(random.Random(seed).sample(range(num_classes), n))


def validation_images(labels: list[int], fraction: float, seed: int) -> list[int]:
    """Rows held out: round(fraction x n) of each class's n images, at least 1 where n >= 2, chosen by `seed`."""
    rng, by_class = random.Random(seed), defaultdict(list)
    for row, label in enumerate(labels):
        by_class[label].append(row)
    held = []
    for label in sorted(by_class):
        rows = by_class[label]
        held += rng.sample(rows, max(1, round(fraction * len(rows))) if len(rows) >= 2 else 0)
    return sorted(held)


def selection_bundle(bundle: DataBundle, cfg: DataConfig, seed: int) -> DataBundle:
    """Train on the training classes minus the validation classes; evaluate on the validation classes.

    With data.selection_split = "test", the full training split and the real test split (the paper's
    practice, only for reproducing it).
    """
    if cfg.selection_split == "test":
        log.warning("%s: selecting on the TEST split (data.selection_split = 'test'); its recall is then"
                    " no longer a held-out result", bundle.name)
        return bundle
    if bundle.task == "classification":
        return _image_split(bundle, seed)
    held_out = validation_classes(bundle.num_classes, cfg.val_fraction, seed)
    if not held_out:
        raise AutolrError(_no_validation(bundle.name, bundle.num_classes, cfg.val_fraction))
    kept = [c for c in range(bundle.num_classes) if c not in set(held_out)]
    log.info("%s: validation split = %d of %d training classes (seed %d); selection trains on the other %d",
             bundle.name, len(held_out), bundle.num_classes, seed, len(kept))
    return replace(bundle, train=subset(bundle.train, kept), test=subset(bundle.train, held_out),
                   query=None, gallery=None, eval_on="val")


def _image_split(bundle: DataBundle, seed: int) -> DataBundle:
    held = validation_images(labels_of(bundle.train), VAL_IMAGES, seed)
    kept = sorted(set(range(len(bundle.train))) - set(held))
    log.info("%s: validation split = %d of %d training images (%.0f%% of each class, seed %d)",
             bundle.name, len(held), len(bundle.train), 100 * VAL_IMAGES, seed)
    return replace(bundle, train=bundle.train.select(kept), test=bundle.train.select(held), eval_on="val")


def _no_validation(name: str, num_classes: int, fraction: float) -> str:
    if fraction <= 0:
        return (f"data.val_fraction = {fraction} leaves no validation classes, so selection cannot run:"
                " set it above 0 (default 0.2)")
    return (f"{name} has {num_classes} training classes; a validation split needs at least"
            f" {MIN_TRAIN_CLASSES}, so selection cannot run on it")
