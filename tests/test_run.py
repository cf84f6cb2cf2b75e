"""End to end: a real (tiny) run from recipe to run folder, its files, and reloading the model."""

import json

import pytest
import tomllib
import torch

import autolr
from autolr.cli import main

TINY = [
    "model.name=test_resnet", "data.image_size=16", "data.workers=0", "data.batch_size=64",
    "train.epochs=2", "train.lr=0.01", "eval.batch_size=512",
]


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "quick"
    assert main(["run", "quickstart", "--output", str(out), *sets(TINY)]) == 0
    return out


def test_run_folder_has_every_file(finished_run):
    names = {p.name for p in finished_run.iterdir()}
    assert {"recipe.toml", "metrics.json", "log.jsonl", "model.safetensors", "model.json", "run.log"} <= names
    assert not [n for n in names if n.endswith(".tmp")]


def test_metrics_report_before_and_after(finished_run):
    m = json.loads((finished_run / "metrics.json").read_text())
    for key in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r"):
        assert 0.0 <= m[key] <= 1.0
        assert 0.0 <= m["initial"][key] <= 1.0
    assert m["recall@1"] <= m["recall@2"] <= m["recall@4"] <= m["recall@8"]
    assert (m["dataset"], m["model"], m["epochs"]) == ("digits", "test_resnet", 2)
    assert m["wall_time"] > 0


def test_log_has_one_row_per_epoch(finished_run):
    rows = [json.loads(line) for line in (finished_run / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "epoch"]  # the quickstart runs AutoLR: trial rows too
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["loss"] > 0 and len(r["lrs"]) >= 3 for r in rows)


def test_resolved_recipe_reproduces_the_run(finished_run):
    resolved = tomllib.loads((finished_run / "recipe.toml").read_text())
    assert resolved["model"]["name"] == "test_resnet" and resolved["train"]["epochs"] == 2
    assert autolr.load_recipe(finished_run / "recipe.toml").output.name == "quickstart"  # the resolved recipe keeps the run-folder prefix


def test_reloaded_model_gives_the_same_embeddings(finished_run):
    from autolr.data import load_data
    from autolr.data.transforms import build_transforms

    recipe = autolr.load_recipe(finished_run / "recipe.toml")
    net = autolr.load_model(finished_run)
    _, test_tf, _ = build_transforms(recipe.data, net.backbone.pretrained_cfg)
    split = load_data(recipe.data).test
    x = torch.stack([test_tf(split[i]["image"].convert("RGB")) for i in range(8)])
    again = autolr.load_model(finished_run)
    torch.testing.assert_close(net.embed(x), again.embed(x))
    # and equal to the trained weights that were saved
    from safetensors.torch import load_file

    state = load_file(str(finished_run / "model.safetensors"))
    torch.testing.assert_close(state["head.4.weight"], net.head[4].weight.detach())


def test_run_api_returns_the_folder(tmp_path):
    recipe = autolr.load_recipe("quickstart", TINY[:-1] + ["train.epochs=1", "eval.flip=false"])
    result = autolr.run(recipe, output=tmp_path / "api")
    assert result.run_dir == tmp_path / "api"
    assert json.loads((result.run_dir / "metrics.json").read_text())["recall@1"] == result.metrics["recall@1"]


def test_resume_of_a_finished_run_returns_its_metrics(finished_run):
    result = autolr.run(autolr.load_recipe(finished_run / "recipe.toml"), output=finished_run, resume=True)
    assert result.metrics == json.loads((finished_run / "metrics.json").read_text())


def test_resume_with_another_network_is_refused_and_the_run_keeps_its_recipe(finished_run, capsys):
    before = (finished_run / "recipe.toml").read_text()
    args = [a for item in TINY for a in ("--set", item)]
    code = main(["run", "quickstart", "--output", str(finished_run), "--resume", *args, "--set", "model.name=resnet18"])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "model.name = 'resnet18' here, 'test_resnet' in the run" in err
    assert f"autolr run {finished_run / 'recipe.toml'} --resume --output {finished_run}" in err
    # a finished run resumed with a harmless change returns its metrics and keeps the recipe it ran with
    assert main(["run", "quickstart", "--output", str(finished_run), "--resume", *args, "--set", "data.workers=1"]) == 0
    assert (finished_run / "recipe.toml").read_text() == before


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from autolr.train import loop

    def interrupted(trainer):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "fit", interrupted)
    out = tmp_path / "run"
    args = [a for item in [*TINY, "train.epochs=1"] for a in ("--set", item)]
    assert main(["run", "quickstart", "--output", str(out), *args]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert f"--resume --output {out}" in (out / "run.log").read_text()


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path):
    out = tmp_path / "run"
    args = sets([*TINY, "train.epochs=1", "eval.flip=false", "autolr.max_trials=1"])
    assert main(["run", "quickstart", "--output", str(out), *args]) == 0
    first = json.loads((out / "metrics.json").read_text())
    model = (out / "model.safetensors").read_bytes()
    assert main(["run", "quickstart", "--output", str(out), "--resume", *args, "--set", "train.epochs=2"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["epochs"] == 2 and again["initial"] == first["initial"]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    assert (out / "model.safetensors").read_bytes() != model  # replaced at the new end
    assert autolr.load_recipe(out / "recipe.toml").train.epochs == 2
    assert "resumed from epoch-0001.pt" in (out / "run.log").read_text()
