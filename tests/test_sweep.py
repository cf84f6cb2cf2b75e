"""`autolr sweep`: the grid logic against a fake run (cells, resume, ramp marks, choice, outputs), and one
real 1x2 sweep of tiny selection runs."""

import csv
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from PIL import Image

from autolr import fileio, runner
from autolr.cli import main
from autolr.errors import Diverged
from autolr.experiments.sweep import parse_grid

V = [0.1, 0.5, 1.0]  # first-trial weight variations: the ramp cannot ascend when beta <= alpha / 10


@pytest.fixture
def fake_run(monkeypatch):
    """`autolr.run` replaced (as the sweep calls it): scores alpha + beta, logs a first trial, records every call."""
    calls = []

    def run(recipe, *, output, resume=False, overwrite=False, selection=False):
        calls.append((Path(output).name, selection))
        a = recipe.autolr
        if a.alpha > 10:
            raise Diverged("the loss became NaN/inf in epoch 1")
        metrics = {"recall@1": round((a.alpha + a.beta) / 10, 6), "map@r": 0.1, "split": "val" if selection else "test"}
        Path(output).mkdir(parents=True, exist_ok=True)
        fileio.append_jsonl(Path(output) / "log.jsonl", {"epoch": 1, "kind": "trial", "trial": 1, "v": V})
        fileio.write_json(Path(output) / "metrics.json", metrics)
        return runner.RunResult(Path(output), metrics)

    monkeypatch.setattr("autolr.experiments.sweep.run", run)
    return calls


def sweep(*args):
    with redirect_stdout(io.StringIO()) as out:
        code = main(["sweep", "quickstart", *[str(a) for a in args]])
    return code, out.getvalue()


def test_parse_grid_keeps_lists_whole():
    grid = parse_grid("train.milestones=[3, 4],[5]")
    assert grid.key == "train.milestones" and grid.values == ["[3, 4]", "[5]"]
    assert parse_grid("autolr.alpha=1,2, 3").values == ["1", "2", "3"]


def test_a_2x2_sweep_chooses_on_val_marks_the_ramp_and_writes_everything(tmp_path, fake_run, monkeypatch):
    import autolr.experiments.sweep as sweep_module

    legends, draw = [], sweep_module.heatmap
    monkeypatch.setattr(sweep_module, "heatmap", lambda *a: legends.append(draw(*a)))
    out = tmp_path / "sweep"
    code, printed = sweep("--grid", "autolr.alpha=1,3", "--grid", "autolr.beta=0.2,0.4", "--output", out)
    assert code == 0
    assert [name for name, _ in fake_run] == [
        "cell-autolr.alpha=1_autolr.beta=0.2", "cell-autolr.alpha=1_autolr.beta=0.4",
        "cell-autolr.alpha=3_autolr.beta=0.2", "cell-autolr.alpha=3_autolr.beta=0.4",
    ]
    assert all(selection for _, selection in fake_run)
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["chosen"] == "cell-autolr.alpha=3_autolr.beta=0.4" and summary["metric"] == "recall@1"
    ramps = {(c["autolr.alpha"], c["autolr.beta"]): c["ramp"] for c in summary["cells"]}
    assert ramps == {("1", "0.2"): "ascending", ("1", "0.4"): "ascending",
                     ("3", "0.2"): "non-ascending", ("3", "0.4"): "ascending"}
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["chosen"] for r in rows] == ["False", "False", "False", "True"]
    md = (out / "sweep.md").read_text()
    assert "| 3 | 0.2 | 32.00 | 10.00 | non-ascending |  |" in md and "val recall@1" in md
    with Image.open(out / "heatmap.png") as im:
        assert im.format == "PNG"
    assert legends == [["chosen: best val recall@1", "first-epoch ramp not ascending (repair rule)"]]
    assert "chosen: cell-autolr.alpha=3_autolr.beta=0.4" in " ".join(printed.split())


def test_resume_skips_finished_cells_and_runs_new_ones(tmp_path, fake_run):
    out = tmp_path / "sweep"
    assert sweep("--grid", "autolr.alpha=1,2", "--output", out)[0] == 0
    assert sweep("--grid", "autolr.alpha=1,2", "--output", out)[0] == 2  # not empty, no --resume
    assert sweep("--grid", "autolr.alpha=1,2,4", "--output", out, "--resume")[0] == 0
    assert [name for name, _ in fake_run] == ["cell-autolr.alpha=1", "cell-autolr.alpha=2", "cell-autolr.alpha=4"]
    assert not (out / "heatmap.png").exists()  # one grid: tables only
    assert json.loads((out / "sweep.json").read_text())["chosen"] == "cell-autolr.alpha=4"


def test_a_diverged_cell_is_marked_and_final_trains_the_chosen_one(tmp_path, fake_run):
    out = tmp_path / "sweep"
    code, _ = sweep("--grid", "autolr.alpha=2,20", "--output", out, "--final")
    assert code == 0
    assert fake_run[-1] == ("final", False)
    summary = json.loads((out / "sweep.json").read_text())
    assert [c["status"] for c in summary["cells"]] == ["ok", "diverged"]
    assert summary["chosen"] == "cell-autolr.alpha=2" and summary["final"]["split"] == "test"
    assert "diverged" in (out / "sweep.md").read_text() and "Final run" in (out / "sweep.md").read_text()


@pytest.mark.parametrize(("grid", "message"), [
    ("autolr.alpah=1,2", "unknown key autolr.alpah; did you mean autolr.alpha?"),
    ("autolr.alpha=1,-2", "--grid autolr.alpha=-2"),
    ("alpha=1,2", "expected section.key=v1,v2"),
    ("autolr.alpha=1,1", "repeats a value"),
    ("prune.mode=search,fixed", "a sweep's cells are single trainings"),
])
def test_bad_grids_exit_2_before_anything_runs(tmp_path, fake_run, capsys, grid, message):
    assert sweep("--grid", grid, "--output", tmp_path / "s")[0] == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert fake_run == [] and not (tmp_path / "s").exists()


def test_a_real_1x2_sweep_of_selection_runs(tmp_path):
    tiny = ["model.name=test_resnet", "data.image_size=16", "data.workers=0", "data.batch_size=64", "eval.batch_size=512",
            "eval.flip=false", "train.epochs=1", "autolr.max_trials=1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads contend on this shared 2-core machine and run several times slower
    try:
        code, _ = sweep("--grid", "autolr.beta=0.4,0.8", *[a for s in tiny for a in ("--set", s)], "--output", tmp_path / "s")
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    summary = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [c["split"] for c in summary["cells"]] == ["val", "val"]
    assert all(0 <= c["recall@1"] <= 1 and c["ramp"] in ("ascending", "non-ascending") for c in summary["cells"])
    assert summary["chosen"] in {c["cell"] for c in summary["cells"]}
    assert not list((tmp_path / "s").rglob("model.safetensors"))  # selection runs export no model
