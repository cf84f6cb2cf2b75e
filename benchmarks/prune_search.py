"""The pruning search's two estimators on the same data: which depth each picks, and what each costs.

Runs `prune.mode = "search"` twice through `autolr.run` on one recipe, once with the paper's full search
(one fine-tune per candidate depth, stopping at the first drop: p + 2 trainings) and once with the
"heads" estimator (one training of the full network with a head at every cut), and prints one JSON
object: per estimator the chosen depth, every candidate's validation score, the search's wall time
and the number of trainings; and the final test Recall@1 each depth gives.

    python benchmarks/prune_search.py                     # resnet18 from scratch on digits at 32 px
    python benchmarks/prune_search.py --set model.name=resnet50 --set model.pretrained=true \
        --set data.name=cub200 --set data.root=/data/CUB_200_2011 --set prune.epochs=15    # the real thing
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from _common import stdout_to_stderr

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUICK = [
    "model.name=resnet18", "model.pretrained=false", "data.image_size=32", "data.workers=0", "eval.flip=false",
    "train.epochs=2", "train.lr=0.01", "train.schedule='constant'", "prune.mode='search'", "prune.epochs=2",
    "prune.max_depth=6",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="quickstart")
    parser.add_argument("--set", action="append", default=[], help="extra recipe overrides")
    args = parser.parse_args()

    import autolr

    out: dict = {"recipe": args.recipe, "overrides": [*QUICK, *args.set]}
    with tempfile.TemporaryDirectory() as tmp, stdout_to_stderr():
        for estimator in ("full", "heads"):
            recipe = autolr.load_recipe(args.recipe, [*QUICK, *args.set, f"prune.estimator={estimator!r}"])
            m = autolr.run(recipe, output=Path(tmp) / estimator).metrics
            out[estimator] = {
                "depth": m["prune.depth"],
                "trainings": m["prune.trainings"],
                "search_seconds": m["prune.seconds"],
                "scores": {c["drop_top"]: c["score"] for c in m["prune.candidates"]},
                "final_test_recall@1": m["recall@1"],
            }
    out["same_depth"] = out["full"]["depth"] == out["heads"]["depth"]
    out["cost_ratio_full_over_heads"] = round(out["full"]["search_seconds"] / out["heads"]["search_seconds"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
