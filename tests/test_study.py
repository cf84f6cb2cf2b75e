"""`autolr study`: arms x seeds against a fake run (folders, resume, baseline, outputs, statistics
recomputed from study.csv alone), and real tiny studies (the quickstart, and a transfer from a run folder)."""

from __future__ import annotations

import csv
import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from _fake_datasets import make_imagefolder
from PIL import Image
from scipy import stats

import autolr
from autolr import fileio, runner
from autolr.cli import main
from autolr.errors import AutolrError
from autolr.experiments.study import parse_arm, parse_baseline, read_csv, summarize
from autolr.recipe import load_recipe

# recall@1 of the fake run: a schedule's level plus a per-seed offset (so the pairing over seeds matters)
LEVEL = {"constant": 0.60, "autolr": 0.62, "cosine": 0.55}
SEED = [0.00, 0.05, -0.03, 0.02]
SPREAD = {"constant": 1.0, "autolr": 1.0, "cosine": 0.4}  # how much a schedule follows the seed


@pytest.fixture
def fake_run(monkeypatch):
    """`autolr.run` replaced: a deterministic score per (schedule, seed, lr), an AutoLR log with
    extra trials; `fail_at` makes the n-th call raise KeyboardInterrupt (a killed study)."""
    calls, fail_at = [], {"n": None}

    def run(recipe, *, output, resume=False, overwrite=False, selection=False):
        assert not selection  # a study compares on the test split: never a selection run
        if fail_at["n"] is not None and len(calls) + 1 == fail_at["n"]:
            raise KeyboardInterrupt
        t = recipe.train
        calls.append((str(Path(output).relative_to(Path(output).parents[1])), t.seed))
        r1 = LEVEL[t.schedule] + SPREAD[t.schedule] * SEED[t.seed] + (t.lr - 0.01)
        metrics = {"recall@1": round(r1, 6), "recall@2": round(r1 + 0.1, 6), "map@r": round(r1 / 3, 6),
                   "split": "test", "wall_time": 10.0 + t.seed + (5.0 if t.schedule == "autolr" else 0.0)}
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        fileio.write_text(out / "recipe.toml", recipe.to_toml())
        for epoch in range(1, t.epochs + 1):
            trials = 2 if t.schedule == "autolr" and epoch == 1 else 1
            fileio.append_jsonl(out / "log.jsonl", {"epoch": epoch, "kind": "epoch", "seconds": 3.0 * trials,
                                                 "trials": trials, "trial_seconds": [3.0] * trials, "loss": 1.0})
        fileio.write_json(out / "metrics.json", metrics)
        return runner.RunResult(out, metrics)

    monkeypatch.setattr(runner, "run", run)
    return calls, fail_at


def study(*args) -> tuple[int, str]:
    with redirect_stdout(io.StringIO()) as out:
        code = main(["study", "quickstart", *[str(a) for a in args]])
    return code, out.getvalue()


def test_parse_arm_and_baseline():
    arm = parse_arm("train.milestones=[3, 4],[5]")
    assert arm.key == "train.milestones" and arm.values == ["[3, 4]", "[5]"]
    arms = [parse_arm("train.schedule=autolr,constant"), parse_arm("train.lr=0.01,0.02")]
    assert parse_baseline(None, arms) == {"train.schedule": "autolr"}
    assert parse_baseline("train.lr=0.02", arms) == {"train.lr": "0.02"}
    with pytest.raises(AutolrError, match="not a value of --arm train.schedule; use one of autolr, constant"):
        parse_baseline("train.schedule=cosine", arms)
    with pytest.raises(AutolrError, match="'train.epochs' is not an arm"):
        parse_baseline("train.epochs=3", arms)
    with pytest.raises(AutolrError, match="repeats a value"):
        parse_arm("train.lr=0.1,0.1")
    with pytest.raises(AutolrError, match="--seeds"):
        parse_arm("train.seed=0,1")


def test_an_arm_over_a_section_sets_several_keys_per_value(tmp_path, fake_run):
    """A schedule with its own LR (each chosen by a sweep): `train={schedule="cosine", lr=0.03}`."""
    calls, _ = fake_run
    arm = parse_arm('train={schedule="constant"},{schedule="cosine", lr=0.03, milestones=[2, 3]}')
    assert arm.key == "train" and arm.values == ['{schedule="constant"}', '{schedule="cosine", lr=0.03, milestones=[2, 3]}']
    out = tmp_path / "study"
    assert study("--arm", 'train={schedule="constant"},{schedule="cosine", lr=0.03}', "--seeds", 1, "--output", out,
                 "--set", "train.epochs=1")[0] == 0
    assert [c[0] for c in calls] == ["train=schedule=constant/seed-0", "train=schedule=cosine+lr=0.03/seed-0"]
    saved = read_csv(out / "study.csv")
    assert saved[1]["recall@1"] == pytest.approx(LEVEL["cosine"] + 0.02)  # lr 0.03 reached the run
    with pytest.raises(AutolrError, match="inline tables"):
        parse_arm("train=constant,cosine")


def test_a_study_runs_every_arm_and_seed_and_writes_four_outputs(tmp_path, fake_run, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps the table to the terminal's width
    calls, _ = fake_run
    out = tmp_path / "study"
    code, printed = study("--arm", "train.schedule=constant,autolr", "--seeds", 3, "--set", "train.epochs=2",
                          "--output", out)
    assert code == 0
    assert calls == [("train.schedule=constant/seed-0", 0), ("train.schedule=constant/seed-1", 1),
                     ("train.schedule=constant/seed-2", 2), ("train.schedule=autolr/seed-0", 0),
                     ("train.schedule=autolr/seed-1", 1), ("train.schedule=autolr/seed-2", 2)]
    for name in ("study.csv", "study.json", "study.md", "study.png"):
        assert (out / name).is_file(), name
    with Image.open(out / "study.png") as im:
        assert im.format == "PNG"
    summary = json.loads((out / "study.json").read_text())
    assert summary["baseline"] == "train.schedule=constant" and summary["metric"] == "recall@1"
    autolr = summary["arms"]["train.schedule=autolr"]
    # autolr - constant = 0.02 on every seed: the paired interval is exactly that, with 3 wins
    assert autolr["paired"]["recall@1"]["mean"] == pytest.approx(0.02)
    assert (autolr["paired"]["recall@1"]["wins"], autolr["paired"]["recall@1"]["losses"]) == (3, 0)
    assert autolr["cost"]["trial_epochs_per_epoch"]["mean"] == pytest.approx(1.5)  # 3 trained epochs for 2
    assert autolr["cost"]["wall_seconds"]["mean"] == pytest.approx(16.0)
    assert "paired" not in summary["arms"]["train.schedule=constant"]
    md = (out / "study.md").read_text()
    assert "`train.schedule=autolr` | `train.schedule=constant` | 3 | +2.00 [+2.00, +2.00]" in md
    assert "3/0 of 3" in md
    assert "train.schedule=autolr" in printed and "+2.00" in printed


def test_statistics_are_recomputed_from_study_csv_alone(tmp_path, fake_run):
    out = tmp_path / "study"
    assert study("--arm", "train.schedule=constant,autolr,cosine", "--arm", "train.lr=0.01,0.03", "--seeds", 4,
                 "--set", "train.epochs=1", "--output", out, "--baseline", "train.schedule=autolr")[0] == 0
    saved = json.loads((out / "study.json").read_text())
    with open(out / "study.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 * 2 * 4
    t975 = stats.t.ppf(0.975, 3)
    for row_arm, entry in saved["arms"].items():
        mine = {int(r["seed"]): float(r["recall@1"]) for r in table if r["arm"] == row_arm}
        values = [mine[s] for s in sorted(mine)]
        mean = sum(values) / 4
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
        got = entry["metrics"]["recall@1"]
        assert (got["mean"], got["low"], got["high"]) == pytest.approx((mean, mean - t975 * sd / 2, mean + t975 * sd / 2))
        partner = entry["baseline_arm"]  # the autolr arm at the same train.lr
        assert partner == f"train.schedule=autolr train.lr={entry['values']['train.lr']}"
        if partner == row_arm:
            assert "paired" not in entry
            continue
        base = {int(r["seed"]): float(r["recall@1"]) for r in table if r["arm"] == partner}
        diffs = [mine[s] - base[s] for s in sorted(mine)]
        paired = entry["paired"]["recall@1"]
        if max(diffs) - min(diffs) < 1e-9:  # the same difference on every seed: no spread
            low = high = diffs[0]
        else:
            low, high = stats.ttest_rel([mine[s] for s in sorted(mine)], [base[s] for s in sorted(mine)]).confidence_interval(0.95)
        assert paired["mean"] == pytest.approx(sum(diffs) / 4)
        assert (paired["low"], paired["high"]) == pytest.approx((low, high), abs=1e-9)
        assert paired["wins"] == sum(d > 0 for d in diffs) and paired["losses"] == sum(d < 0 for d in diffs)
    # and the library's own function gives study.json's statistics from the csv rows
    again = summarize(read_csv(out / "study.csv"), ["train.schedule", "train.lr"], {"train.schedule": "autolr"}, "recall@1")
    assert json.loads(json.dumps(again))["arms"] == saved["arms"]


def test_a_killed_study_resumes_without_retraining_finished_runs(tmp_path, fake_run):
    calls, fail_at = fake_run
    out = tmp_path / "study"
    fail_at["n"] = 3
    code, _ = study("--arm", "train.schedule=constant,autolr", "--seeds", 2, "--set", "train.epochs=1", "--output", out)
    assert code == 130 and len(calls) == 2
    assert len(list(csv.DictReader((out / "study.csv").open()))) == 2  # what finished is already written
    assert study("--arm", "train.schedule=constant,autolr", "--seeds", 2, "--set", "train.epochs=1",
                 "--output", out)[0] == 2  # not empty, no --resume
    fail_at["n"] = None
    calls.clear()
    code, _ = study("--arm", "train.schedule=constant,autolr", "--seeds", 2, "--set", "train.epochs=1",
                    "--output", out, "--resume")
    assert code == 0
    assert calls == [("train.schedule=autolr/seed-0", 0), ("train.schedule=autolr/seed-1", 1)]
    assert len(json.loads((out / "study.json").read_text())["arms"]["train.schedule=autolr"]["paired_seeds"]) == 2


def test_resume_refuses_a_finished_run_made_with_another_recipe(tmp_path, fake_run):
    out = tmp_path / "study"
    assert study("--arm", "train.schedule=constant", "--seeds", 1, "--set", "train.epochs=1", "--output", out)[0] == 0
    code = study("--arm", "train.schedule=constant", "--seeds", 1, "--set", "train.epochs=2", "--output", out, "--resume")[0]
    assert code == 2


def test_one_seed_says_no_interval_exists(tmp_path, fake_run):
    out = tmp_path / "study"
    code, printed = study("--arm", "train.schedule=constant,autolr", "--seeds", 1, "--set", "train.epochs=1", "--output", out)
    assert code == 0
    saved = json.loads((out / "study.json").read_text())
    paired = saved["arms"]["train.schedule=autolr"]["paired"]["recall@1"]
    assert paired["low"] is None and paired["high"] is None and paired["mean"] == pytest.approx(0.02)
    assert "no interval exists" in (out / "study.md").read_text()
    assert "no interval exists" in " ".join(printed.split())


@pytest.mark.parametrize("args, message", [
    (["--arm", "train.schedul=constant", "--seeds", "1"], "did you mean train.schedule"),
    (["--arm", "train.schedule=constant,fast", "--seeds", "1"], "--arm train.schedule=fast"),
    (["--arm", "train.schedule=constant", "--seeds", "1", "--set", "train.seed=3"], "--seeds"),
    (["--arm", "train.schedule=constant", "--seeds", "0"], "at least 1 seed"),
    (["--arm", "train.schedule=constant", "--seeds", "1", "--baseline", "train.schedule=autolr"], "not a value of --arm"),
    (["--arm", "train.schedule=constant"], "Missing option '--seeds'"),
])
def test_user_errors_are_one_line_before_anything_runs(tmp_path, fake_run, capsys, args, message):
    calls, _ = fake_run
    code, _ = study(*args, "--output", tmp_path / "s")
    assert code == 2 and not calls
    assert message in " ".join(capsys.readouterr().err.split())


# -- real tiny runs: a transfer study from a run folder, and the cost accounting every AutoLR run keeps -----

TINY = ["model.name=test_resnet", "model.pretrained=false", "data.name=imagefolder", "data.image_size=32",
        "data.workers=0", "data.batch_size=8", "eval.batch_size=64", "eval.flip=false", "eval.recall_at=[1,2]",
        "train.lr=0.01", "train.head_lr=0.01"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """4 training classes x 6 images (3 batches of 8), 2 unseen test classes."""
    return make_imagefolder(tmp_path_factory.mktemp("data"), per_class=6, size=(32, 32)).folder


def tiny(folder: Path, *more: str) -> list[str]:
    return [*TINY, f"data.root={json.dumps(str(folder))}", *more]


def log_rows(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in fileio.read_jsonl(run_dir / "log.jsonl") if r.get("kind") == kind]


def test_a_transfer_study_from_a_pretrained_run_folder(tmp_path, folder):
    """Step 1 pre-trains a run; step 2 studies two schedules that fine-tune from it (model.checkpoint)."""
    sets = lambda items: [a for item in items for a in ("--set", item)]  # noqa: E731
    pre = tmp_path / "pretrain"
    assert main(["run", "quickstart", "--output", str(pre), *sets(tiny(folder, "train.epochs=1"))]) == 0
    out = tmp_path / "study"
    code, _ = study("--arm", "train.schedule=autolr,constant", "--seeds", 2, "--output", out,
                    *sets(tiny(folder, "train.epochs=1", f"model.checkpoint={json.dumps(str(pre))}",
                               "autolr.tau=1.0", "autolr.strict=true", "autolr.max_trials=2")))
    assert code == 0
    table = read_csv(out / "study.csv")
    assert [(r["train.schedule"], r["seed"]) for r in table] == [("autolr", 0), ("autolr", 1), ("constant", 0), ("constant", 1)]
    assert all(0 <= r["recall@1"] <= 1 and r["wall_seconds"] > 0 for r in table)
    assert [r["epochs_trained"] for r in table] == [2, 2, 1, 1]  # AutoLR's rejected first trial was paid for
    pretrained = json.loads((pre / "metrics.json").read_text())
    for r in table:  # every run started from the pre-trained weights: before training it scores what they scored
        initial = json.loads((out / r["run"] / "metrics.json").read_text())["initial"]
        assert initial["map@r"] == pytest.approx(pretrained["map@r"], abs=1e-6)
    summary = json.loads((out / "study.json").read_text())
    assert summary["arms"]["train.schedule=constant"]["paired_seeds"] == [0, 1]


@pytest.fixture(scope="module")
def decayed_autolr_run(tmp_path_factory, folder):
    """2 epochs, LRs x0.2 after epoch 1, 2 trials an epoch (never accepted: strict S > 1)."""
    out = tmp_path_factory.mktemp("cost") / "run"
    recipe = load_recipe("quickstart", tiny(folder, "train.schedule=autolr", "train.epochs=2", "train.milestones=[1]",
                                            "train.gamma=0.2", "autolr.tau=1.0", "autolr.strict=true", "autolr.max_trials=2"))
    autolr.run(recipe, output=out)
    return out


def test_an_epoch_row_counts_every_trial(decayed_autolr_run):
    epochs, trials = log_rows(decayed_autolr_run, "epoch"), log_rows(decayed_autolr_run, "trial")
    assert epochs[0]["trials"] == 2 and epochs[0]["trial_stop"] == "max_trials"  # the ramp renewed the LRs
    for e in epochs:
        mine = [t for t in trials if t["epoch"] == e["epoch"]]
        assert e["trials"] == len(mine)
        assert e["seconds"] == pytest.approx(sum(t["seconds"] for t in mine), abs=2e-3)
        assert e["trial_seconds"] == [t["seconds"] for t in mine]
        assert e["images"] == sum(t["images"] for t in mine) == len(mine) * 24  # 3 batches of 8 per trial
        for a, b in zip(mine, mine[1:], strict=False):  # a trial at the previous one's LRs (up to rounding) would be a replay
            assert b["base_lrs"] != pytest.approx(a["base_lrs"], rel=1e-9)


def test_trial_rows_record_the_lrs_actually_used(decayed_autolr_run):
    trials = log_rows(decayed_autolr_run, "trial")
    for t in trials:
        factor = 1.0 if t["epoch"] == 1 else 0.2  # the step decay after epoch 1
        assert t["lrs"] == pytest.approx([factor * lr for lr in t["base_lrs"]])
    assert trials[0]["lrs"] == pytest.approx([0.01] * 4)
    assert trials[-1]["lrs"] != pytest.approx(trials[-1]["base_lrs"])  # epoch 2 ran at a fifth


def test_identical_renewed_lrs_are_not_rerun(tmp_path, folder):
    # min_lr = max_lr = lr: every renewal clamps back to the same LRs, so a second trial would replay the first
    recipe = load_recipe("quickstart", tiny(folder, "train.schedule=autolr", "train.epochs=1", "autolr.tau=1.0",
                                            "autolr.strict=true", "autolr.max_trials=3", "autolr.min_lr=0.01",
                                            "autolr.max_lr=0.01"))
    autolr.run(recipe, output=tmp_path / "run")
    (epoch,) = log_rows(tmp_path / "run", "epoch")
    assert len(log_rows(tmp_path / "run", "trial")) == 1
    assert epoch["trials"] == 1 and epoch["kept_trial"] == 1 and epoch["trial_stop"] == "same_lrs"
    assert "would replay it exactly: not rerun" in (tmp_path / "run" / "run.log").read_text()
