"""Two processes on CPU (torchrun, gloo): same LRs on every rank, files written once."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ARGS = [
    "model.name=test_resnet", "data.image_size=16", "data.workers=0", "data.batch_size=32",
    "eval.batch_size=256", "train.epochs=2", "train.schedule=autolr", "autolr.tau=0.8", "autolr.max_trials=2",
]


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun missing")
def test_two_process_autolr_run(tmp_path):
    out = tmp_path / "ddp"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    sets = [a for item in ARGS for a in ("--set", item)]
    cmd = [torchrun, "--nproc_per_node", "2", "-m", "autolr", "run", "quickstart", "--output", str(out), *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for r in epochs:
        assert len(r["lrs_by_rank"]) == 2 and r["lrs_by_rank"][0] == r["lrs_by_rank"][1] == r["lrs"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["recall@1"] <= 1
    assert (proc.stdout + proc.stderr).count("on digits (test split)") == 1  # one process reports
    assert proc.stdout.count(str(out)) == 1  # and prints the run folder
    assert not list(out.glob("**/*.tmp"))


@pytest.mark.parametrize(("recipe_precision", "expected"), [
    ("auto", "precision: bf16 (train.precision = 'auto': the launcher's 'bf16')"),
    ("no", "precision: no (train.precision = 'no' in the recipe wins over the launcher's 'bf16')"),
])
def test_accelerate_launch_precision(tmp_path, recipe_precision, expected):
    """`accelerate launch --mixed_precision bf16 -m autolr run`: "auto" follows it, an explicit value wins."""
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    out = tmp_path / "run"
    args = [*ARGS, "train.epochs=1", "autolr.max_trials=1", "eval.flip=false", f"train.precision={recipe_precision!r}"]
    sets = [a for item in args for a in ("--set", item)]
    cmd = [launcher, "launch", "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "bf16",
           "--dynamo_backend", "no", "-m", "autolr", "run", "quickstart", "--output", str(out), *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert expected in " ".join((out / "run.log").read_text().split())
