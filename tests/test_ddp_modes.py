"""Every mode under two processes (torchrun, gloo, CPU), in ONE launch that runs them back to back: a 2-cell
sweep, a depth search and an oracle cycle, so the process group must outlive each selection run. Every rank
writes what it decided; the ranks must agree, and an epoch must have the optimizer steps of one process."""

import json
import textwrap

import pytest
from _torchrun import launch, torchrun

import autolr

TINY = [
    "model.name=test_resnet", "model.pretrained=false", "data.image_size=16", "data.workers=0",
    "data.batch_size=32", "eval.batch_size=256", "eval.flip=false", "train.epochs=1", "autolr.max_trials=1",
]

SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path

    import autolr
    from autolr.experiments.sweep import parse_grid, run_sweep

    out, sets = Path(sys.argv[1]), sys.argv[2:]
    scores = lambda m: {k: v for k, v in m.items() if k.startswith(("recall@", "map@"))}
    sweep = run_sweep("quickstart", [parse_grid("autolr.beta=0.2,0.4")], overrides=sets, output=out / "sweep")
    search = autolr.run(autolr.load_recipe("quickstart", [*sets, "prune.mode='search'", "prune.max_depth=1"]),
                        output=out / "search")
    oracle = autolr.run(autolr.load_recipe("quickstart", [
        *sets, "train.schedule='constant'", "prune.mode='iterative'", "prune.warmup_epochs=0", "prune.cycles=1",
        "prune.lr_schedule='oracle'", "prune.oracle_grid=[0.01, 0.05]"]), output=out / "oracle")
    decided = {
        "sweep": [sweep.chosen.name, [scores(c.metrics) for c in sweep.cells]],
        "search": [search.metrics["prune.depth"], [c["score"] for c in search.metrics["prune.candidates"]],
                   scores(search.metrics)],
        "oracle": [[c.get("max_lr"), c.get("val_score"), c.get("score")] for c in oracle.metrics["cycles"]],
    }
    (out / f"decided-{os.environ['RANK']}.json").write_text(json.dumps(decided))
''')


def _epoch_steps(log_file):
    return [r["steps"] for r in map(json.loads, log_file.read_text().splitlines()) if r["kind"] == "epoch"]


@pytest.mark.slow
@pytest.mark.skipif(torchrun() is None, reason="torchrun missing")
def test_sweep_search_and_oracle_in_one_two_process_launch(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = launch(SCRIPT, [str(out), *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"decided-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # the same cell, depth and oracle LR on both ranks
    assert ranks[0]["sweep"][0] in {"cell-autolr.beta=0.2", "cell-autolr.beta=0.4"}
    assert [c[0] for c in ranks[0]["oracle"]][1] in (0.01, 0.05)
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    assert sweep["chosen"] == ranks[0]["sweep"][0] and len(sweep["cells"]) == 2
    for cell in ("cell-autolr.beta=0.2", "cell-autolr.beta=0.4"):  # a fresh cell never says it resumes
        assert "resume" not in (out / "sweep" / cell / "run.log").read_text()
    assert not list(out.glob("**/*.tmp"))
    # data.batch_size is the global batch: 16 per process here, and an epoch has one process's steps
    two = _epoch_steps(out / "sweep" / "cell-autolr.beta=0.2" / "log.jsonl")
    assert "32 images per step (data.batch_size, global) = 16 per process x 2" in " ".join(
        (out / "search" / "run.log").read_text().split())
    one = autolr.run(autolr.load_recipe("quickstart", [*TINY, "autolr.beta=0.2"]), output=tmp_path / "one",
                     selection=True)
    assert two == _epoch_steps(one.run_dir / "log.jsonl") and two[0] > 1
