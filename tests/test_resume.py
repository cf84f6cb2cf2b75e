"""A run killed with SIGKILL at a random moment resumes and ends with the same metrics."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

ARGS = [
    "model.name=test_resnet", "data.image_size=16", "data.workers=0", "data.batch_size=64",
    "eval.batch_size=512", "train.epochs=3", "train.schedule=autolr", "autolr.tau=0.8",
    "autolr.max_trials=2", "train.milestones=[2]", "eval.flip=false",
]


def command(out, *extra):
    sets = [a for item in ARGS for a in ("--set", item)]
    return [sys.executable, "-m", "autolr", "run", "quickstart", "--output", str(out), *sets, *extra]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}


def finish(out, *extra):
    proc = subprocess.run(command(out, *extra), env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return finish(tmp_path_factory.mktemp("ref") / "run")


@pytest.mark.parametrize(("seed", "workers"), [(0, 0), (1, 2)])
def test_sigkill_then_resume_matches(tmp_path, reference, seed, workers):
    """Seed 1 loads with 2 persistent workers: augmentation comes from (seed, epoch, index), not worker RNG."""
    out = tmp_path / "run"
    loading = ("--set", f"data.workers={workers}")
    proc = subprocess.Popen(command(out, *loading), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill somewhere after the first checkpoint (seed 0) or anywhere early (seed 1)
    deadline = time.time() + 300
    if seed == 0:
        while not list((out / "checkpoints").glob("epoch-*.pt")) and time.time() < deadline:
            time.sleep(0.05)
    time.sleep(random.Random(seed).uniform(0.0, 3.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = finish(out, "--resume", *loading)
    for key in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r"):
        assert resumed[key] == reference[key], key
    trials = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in trials if r["kind"] == "epoch"] == [1, 2, 3]
