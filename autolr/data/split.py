"""The validation split for selection runs: whole classes carved out of the training classes.

Selection (pruning depth, sweep cells, oracle candidates) must not look at the test split, so it trains
on the remaining training classes and scores on these held-out ones (method.md section 2).
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from typing import TYPE_CHECKING

from autolr.data._build import subset
from autolr.errors import AutolrError

if TYPE_CHECKING:
    from autolr.data import DataBundle
    from autolr.recipe import DataConfig

log = logging.getLogger("autolr.data")
MIN_VAL_CLASSES = 2
MIN_TRAIN_CLASSES = 4  # with fewer, no validation split: 2 held out would leave < 2 to train on


def validation_classes(num_classes: int, fraction: float, seed: int) -> list[int]:
    """The labels held out: round(fraction x C), at least 2, chosen by `seed`; [] below 4 classes."""
    if num_classes < MIN_TRAIN_CLASSES or fraction <= 0:
        return []
    n = min(max(MIN_VAL_CLASSES, round(fraction * num_classes)), num_classes - MIN_VAL_CLASSES)
    # A private generator: the same classes for a seed on every machine and every process of a DDP run.
    return sorted(random.Random(seed).sample(range(num_classes), n))


def selection_bundle(bundle: DataBundle, cfg: DataConfig, seed: int) -> DataBundle:
    """Train on the training classes minus the validation classes; evaluate on the validation classes.

    With data.selection_split = "test", the full training split and the real test split (the paper's
    practice, only for reproducing it).
    """
    if cfg.selection_split == "test":
        log.warning("%s: selecting on the TEST split (data.selection_split = 'test'); its recall is then"
                    " no longer a held-out result", bundle.name)
        return bundle
    held_out = validation_classes(bundle.num_classes, cfg.val_fraction, seed)
    if not held_out:
        raise AutolrError(_no_validation(bundle.name, bundle.num_classes, cfg.val_fraction))
    kept = [c for c in range(bundle.num_classes) if c not in set(held_out)]
    log.info("%s: validation split = %d of %d training classes (seed %d); selection trains on the other %d",
             bundle.name, len(held_out), bundle.num_classes, seed, len(kept))
    return replace(bundle, train=subset(bundle.train, kept), test=subset(bundle.train, held_out),
                   query=None, gallery=None, eval_on="val")


def _no_validation(name: str, num_classes: int, fraction: float) -> str:
    if fraction <= 0:
        return (f"data.val_fraction = {fraction} leaves no validation classes, so selection cannot run:"
                " set it above 0 (default 0.2)")
    return (f"{name} has {num_classes} training classes; a validation split needs at least"
            f" {MIN_TRAIN_CLASSES}, so selection cannot run on it")
