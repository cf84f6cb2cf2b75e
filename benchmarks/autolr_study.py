"""Does AutoLR help on a transfer task? Pre-train on a source task, then `autolr study` the schedules on
a target task, and print the study's statistics as JSON (the README's "Does AutoLR help?" table).

    python benchmarks/autolr_study.py --source ../shared/data/omniglot-small1/source \\
        --target ../shared/data/omniglot-small1/target --output runs/omniglot-transfer

Both folders are imagefolder layouts (`train/<class>/*`, `test/<class>/*`) with class-disjoint test
characters. Step 1 trains `recipes/omniglot_pretrain.toml` (beside this script) on the source, once: a
finished run is read back. Step 2 studies the five schedules with `recipes/omniglot_study.toml` from
that run folder (`model.checkpoint`), `--seeds` seeds each, on the target's test split. Everything
resumes: rerun the same command after a kill. Each schedule's LR and AutoLR's alpha/beta/max_trials
were chosen by `autolr sweep` on the target's validation split (the commands are in that recipe).

`--digits DIR` first writes scikit-learn's digits as such a pair of folders (source: digits 0-3 for
pre-training; target: digits 4-7 to fine-tune on, 8-9 as the unseen test classes) and uses them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

# Each schedule at the LR `autolr sweep` chose for it on the target's validation split (recipe comments)
ARM = ('train={schedule="autolr", lr=0.01},{schedule="constant", lr=0.01},{schedule="step", lr=0.01},'
       '{schedule="cosine", lr=0.03},{schedule="layer_decay", lr=0.03}')
RECIPES = Path(__file__).resolve().parent / "recipes"
DIGITS_SOURCE = (0, 1, 2, 3)
DIGITS_TARGET_TRAIN, DIGITS_TARGET_TEST = (4, 5, 6, 7), (8, 9)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.digits:
        args.source, args.target = write_digits(Path(args.digits))
    started = time.time()
    pretrain = run_pretrain(args)
    study = run_target_study(args, pretrain)
    result = {
        "source": str(args.source), "target": str(args.target), "pretrain": pretrain,
        "study": study, "commands": commands(args), "seconds": round(time.time() - started, 1), "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", help="imagefolder to pre-train on (train/, test/)")
    p.add_argument("--target", help="imagefolder to study the schedules on (train/, test/)")
    p.add_argument("--digits", metavar="DIR", help="write scikit-learn's digits as source/ and target/ in DIR and use them")
    p.add_argument("--output", default="runs/autolr-study", help="folder for the pre-training run and the study")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--arm", default=ARM, help="the study's arm (default: the five schedules at their chosen LRs)")
    p.add_argument("--pretrain-recipe", default=str(RECIPES / "omniglot_pretrain.toml"))
    p.add_argument("--study-recipe", default=str(RECIPES / "omniglot_study.toml"))
    p.add_argument("--pretrain-set", action="append", default=[], help="--set for the pre-training (repeatable)")
    p.add_argument("--study-set", action="append", default=[], help="--set for every study run (repeatable)")
    args = p.parse_args(argv)
    if not args.digits and not (args.source and args.target):
        p.error("give --source and --target (or --digits DIR)")
    return args


def run_pretrain(args: argparse.Namespace) -> dict:
    import autolr

    out = Path(args.output) / "pretrain"
    recipe = autolr.load_recipe(args.pretrain_recipe, [f"data.root={json.dumps(str(args.source))}", *args.pretrain_set])
    metrics = autolr.run(recipe, output=out, resume=True).metrics
    return {"run": str(out), **{k: v for k, v in metrics.items() if k.startswith(("recall@", "map@"))},
            "wall_time": metrics.get("wall_time")}


def run_target_study(args: argparse.Namespace, pretrain: dict) -> dict:
    from autolr.experiments.study import parse_arm, run_study

    overrides = [f"data.root={json.dumps(str(args.target))}", f"model.checkpoint={json.dumps(pretrain['run'])}",
                 *args.study_set]
    import autolr

    result = run_study(args.study_recipe, [parse_arm(args.arm)], seeds=args.seeds, run=autolr.run,
                       overrides=overrides, output=Path(args.output) / "study", resume=True)
    return {"folder": str(result.folder), **result.summary}


def commands(args: argparse.Namespace) -> list[str]:
    """The same two steps as CLI commands."""
    out = Path(args.output)
    pre = " ".join(f"--set {s}" for s in args.pretrain_set)
    study = " ".join(f"--set {s}" for s in args.study_set)
    return [
        f"autolr run {args.pretrain_recipe} --set data.root={args.source} {pre} --output {out / 'pretrain'} --resume".replace("  ", " "),
        f"autolr study {args.study_recipe} --arm '{args.arm}' --seeds {args.seeds}"
        f" --set data.root={args.target} --set model.checkpoint={out / 'pretrain'} {study} --output {out / 'study'} --resume".replace("  ", " "),
    ]


def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_avg": list(os.getloadavg()),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}


def write_digits(folder: Path) -> tuple[Path, Path]:
    """scikit-learn's 8x8 digits as PNG folders: source = 0-3 (80/20 of each class's images as train/test,
    the pre-training's own report), target = 4-7 to train on, 8-9 as unseen test classes."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    raw = load_digits()
    pixels = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)
    rng = np.random.default_rng(0)

    def save(split: Path, digit: int, rows: np.ndarray) -> None:
        (split / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in rows:
            Image.fromarray(pixels[i], mode="L").save(split / str(digit) / f"{i:04d}.png")

    if not (folder / "target" / "test").is_dir():
        for d in range(10):
            rows = np.flatnonzero(raw.target == d)
            if d in DIGITS_SOURCE:
                rng.shuffle(rows)
                cut = int(0.8 * len(rows))
                save(folder / "source" / "train", d, rows[:cut])
                save(folder / "source" / "test", d, rows[cut:])
            else:
                save(folder / "target" / ("train" if d in DIGITS_TARGET_TRAIN else "test"), d, rows)
    return folder / "source", folder / "target"


if __name__ == "__main__":
    from autolr.errors import AutolrError

    try:
        main()
    except AutolrError as e:  # a user's mistake: one line, as the CLI prints it
        raise SystemExit(f"error: {e}") from None
