"""The training loop's options in real (tiny) runs: every schedule, bf16 on CPU, gradient accumulation,
trackers, and a diverging loss."""

import json

import pytest
import torch

import autolr
from autolr.cli import main

TINY = [  # timm's test_resnet: 4 blocks, fast on CPU in float32 and in bf16
    "model.name=test_resnet", "data.image_size=16", "data.workers=0", "data.batch_size=64",
    "eval.batch_size=512", "eval.flip=false", "train.lr=0.01", "train.epochs=2", "train.schedule='constant'",
]


def epochs(run_dir):
    rows = map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
    return [r for r in rows if r["kind"] == "epoch"]


def lrs_by_group(run_dir):
    """{group name: [lr at the end of each epoch]} from log.jsonl."""
    rows = epochs(run_dir)
    names = ["stem", *(f"block{i}" for i in range(1, len(rows[0]["lrs"]) - 1)), "head"]
    return {name: [r["lrs"][i] for r in rows] for i, name in enumerate(names)}


@pytest.mark.parametrize("schedule", ["constant", "step", "multistep", "cyclic", "sgdr", "cosine", "layer_decay"])
def test_every_schedule_runs(tmp_path, schedule):
    extra = ["train.milestones=[1]", "train.lr_min=0.001", "train.cycles=1",
             "train.warmup_epochs=1" if schedule == "cosine" else "train.warmup_epochs=0"]
    recipe = autolr.load_recipe("quickstart", [*TINY, f"train.schedule={schedule!r}", *extra])
    result = autolr.run(recipe, output=tmp_path / schedule)
    assert 0 <= result.metrics["recall@1"] <= 1
    lrs = lrs_by_group(result.run_dir)
    if schedule == "constant":
        assert lrs["block1"] == [0.01, 0.01] and lrs["head"] == [0.01, 0.01]
    elif schedule in ("step", "multistep"):
        assert lrs["block1"] == pytest.approx([0.01, 0.002]) and lrs["head"] == pytest.approx([0.01, 0.002])
    elif schedule == "layer_decay":  # 0.75 ** (depth from the top): stem lowest, head at train.head_lr
        assert lrs["stem"][0] == pytest.approx(0.01 * 0.75**5)  # 4 blocks between stem and head
        assert lrs["block1"][0] < lrs["block4"][0] < lrs["head"][0] == 0.01
    else:  # the last step's LR of each epoch moves between lr_min and lr
        assert all(0.001 - 1e-12 <= lr <= 0.01 + 1e-12 for lr in lrs["block1"])
        assert lrs["block1"][0] != lrs["block1"][1]


def test_bf16_accumulation_and_tensorboard_on_cpu(tmp_path, monkeypatch):
    steps = []
    original = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    recipe = autolr.load_recipe("quickstart", [
        *TINY, "train.epochs=1", "train.precision='bf16'", "train.grad_accum=4", "output.log_with=['tensorboard']",
    ])
    result = autolr.run(recipe, output=tmp_path / "run")
    assert "precision: bf16" in (result.run_dir / "run.log").read_text()
    assert len(steps) == 4  # 14 batches of 64 from 901 images: groups of 4, 4, 4 and the last 2
    assert all(p.grad is None for p in autolr.load_model(result.run_dir).parameters())
    assert 0 <= result.metrics["recall@1"] <= 1 and result.metrics["map@r"] == result.metrics["map@r"]  # not NaN
    assert list(result.run_dir.rglob("events.out.tfevents.*")), "tensorboard wrote no event file"


def test_an_unknown_tracker_is_a_recipe_error(capsys):
    assert main(["validate", "quickstart", "--set", "output.log_with=['tensorbord']"]) == 2
    assert "did you mean 'tensorboard'?" in capsys.readouterr().err


def test_a_diverging_loss_stops_with_exit_2_and_keeps_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    # the LRs jump by 1e8 after the first epoch: the loss becomes NaN/inf in epoch 2
    args = [*TINY, "train.schedule='step'", "train.milestones=[1]", "train.gamma=1e8"]
    assert main(["run", "quickstart", "--output", str(out), *[a for s in args for a in ("--set", s)]]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "loss became NaN/inf in epoch 2" in err and "block" in err and "Traceback" not in err
    assert [p.name for p in (out / "checkpoints").glob("epoch-*.pt")] == ["epoch-0001.pt"]
    assert not (out / "metrics.json").exists()
    assert [r["epoch"] for r in epochs(out)] == [1]


@pytest.mark.slow
def test_torch_compile_runs_on_cpu(tmp_path):
    """model.compile: the first compile takes tens of seconds on CPU, so this runs once, on the tiniest setup."""
    recipe = autolr.load_recipe("quickstart", [*TINY, "train.epochs=1", "model.compile=true", "eval.batch_size=1024"])
    result = autolr.run(recipe, output=tmp_path / "run")
    assert 0 <= result.metrics["recall@1"] <= 1
    torch._dynamo.reset()
