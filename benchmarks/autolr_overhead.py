"""What AutoLR costs beyond training: its per-epoch machinery, and how many trial epochs it runs.

Runs the quickstart (digits) twice through `autolr.run`, once with `train.schedule = "autolr"` and once
with `"constant"`, and prints one JSON object:
- trial_epochs_per_epoch: trial rows / epoch rows of the AutoLR run's log.jsonl, as measured (the paper's
  1-2 extra trials in the first 3 of 50 epochs came from ImageNet weights on CUB: context only).
- overhead_pct: the AutoLR machinery per nominal epoch, extra trial epochs excluded, as a % of a
  training epoch. The machinery is what `autolr_epoch` does besides training: snapshots, weight
  variation, sorting quality, logging and, for a rejected trial, LR renewal and restore. Measured as
  the wall time of each `autolr_epoch` call minus the `seconds` of its trials (each a
  `train_one_epoch`) and minus each trial's outside-the-loop time as a constant-LR epoch has it (wall
  of `train_one_epoch` minus its `seconds`), divided by the median trial epoch of the same run (a
  shared machine drifts too much between two runs for their epochs to be compared at the 2% level;
  constant_epoch_s and autolr_trial_s_median are there for that comparison all the same).
- pieces_ms: `snapshot`, `restore`, the weight copy + `measure_variation`, timed directly (median of 5)
  on the AutoLR run's own trained model. An epoch accepted at its first trial costs two snapshots (the
  start, and the best so far) and one weight copy + variation; each extra trial at most one restore,
  one snapshot and one weight copy + variation more: pieces_pct_of_epoch.

    python benchmarks/autolr_overhead.py                  # resnet18 at 32 px, 2 epochs
    python benchmarks/autolr_overhead.py --full           # the quickstart as shipped (resnet50, 8 epochs)
    python benchmarks/autolr_overhead.py --set model.name=resnet50 --set model.drop_top=4   # a pruned ResNet-50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import stdout_to_stderr

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUICK = ["model.name=resnet18", "data.image_size=32", "train.epochs=2"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="the quickstart as shipped (resnet50, 8 epochs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more recipe overrides")
    args = p.parse_args()
    overrides = [*([] if args.full else QUICK), *args.set]
    with tempfile.TemporaryDirectory() as tmp, stdout_to_stderr():
        constant = _timed_run([*overrides, "train.schedule=constant"], Path(tmp, "constant"), "train_one_epoch")
        auto = _timed_run([*overrides, "train.schedule=autolr"], Path(tmp, "autolr"), "autolr_epoch")
        pieces = _pieces_ms(auto["trainer"])
    print(json.dumps(_report(overrides, constant, auto, pieces)))


def _timed_run(overrides: list[str], output: Path, fit: str) -> dict:
    """`autolr.run` with the epoch function `fit` wrapped to record its wall time and its trainer."""
    import autolr
    from autolr.train import loop

    walls, seen = [], {}
    inner = getattr(loop, fit)

    def timed(trainer, epoch, *args):
        start = time.perf_counter()
        out = inner(trainer, epoch, *args)
        walls.append(time.perf_counter() - start)
        seen["trainer"] = trainer
        return out

    setattr(loop, fit, timed)
    try:
        autolr.run(autolr.load_recipe("quickstart", overrides=overrides), output=output)
    finally:
        setattr(loop, fit, inner)
    rows = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return {"walls": walls, "trainer": seen["trainer"], "rows": rows}


def _pieces_ms(trainer) -> dict[str, float]:
    """The per-trial machinery timed directly on a real model and optimizer (median of 5, in ms)."""
    from autolr.train.autolr import block_weights, measure_variation
    from autolr.train.snapshots import restore, snapshot

    snap = snapshot(trainer)

    def weight_copy_and_variation():
        before = [[w.detach().clone() for w in ws] for ws in block_weights(trainer)]
        measure_variation(trainer, before)

    return {
        "snapshot": _median_ms(lambda: snapshot(trainer)),
        "restore": _median_ms(lambda: restore(trainer, snap)),
        "weight_copy_and_variation": _median_ms(weight_copy_and_variation),
    }


def _median_ms(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def _report(overrides: list[str], constant: dict, auto: dict, pieces: dict) -> dict:
    import torch

    const_secs = [r["seconds"] for r in constant["rows"] if r.get("kind") == "epoch"]
    const_outside = statistics.median(w - s for w, s in zip(constant["walls"], const_secs, strict=True))
    epochs = [r for r in auto["rows"] if r.get("kind") == "epoch"]
    trials = [r for r in auto["rows"] if r.get("kind") == "trial"]
    machinery = []
    for wall, row in zip(auto["walls"], epochs, strict=True):
        mine = [t["seconds"] for t in trials if t["epoch"] == row["epoch"]]
        machinery.append(wall - sum(mine) - len(mine) * const_outside)  # each trial is a train_one_epoch
    trial_s = statistics.median(t["seconds"] for t in trials)
    one_trial_ms = 2 * pieces["snapshot"] + pieces["weight_copy_and_variation"]  # an epoch accepted at once
    per_extra_ms = pieces["restore"] + pieces["snapshot"] + pieces["weight_copy_and_variation"]  # at most
    return {
        "benchmark": "autolr_overhead",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "overrides": overrides,
        "epochs": len(epochs),
        "trials_per_epoch": [r["trials"] for r in epochs],
        "trial_epochs_per_epoch": round(len(trials) / len(epochs), 2),
        "constant_epoch_s": round(statistics.median(constant["walls"]), 3),
        "autolr_trial_s_median": round(trial_s, 3),
        "machinery_s_per_epoch": [round(m, 4) for m in machinery],
        "overhead_pct": round(100 * statistics.mean(machinery) / trial_s, 2),
        "pieces_ms": pieces,
        "pieces_pct_of_epoch": {
            "one_trial_epoch": round(100 * one_trial_ms / 1000 / trial_s, 3),
            "each_extra_trial_at_most": round(100 * per_extra_ms / 1000 / trial_s, 3),
        },
        "goal_overhead_pct": 2.0,
    }


if __name__ == "__main__":
    main()
