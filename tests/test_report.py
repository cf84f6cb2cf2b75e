"""`autolr report` and `autolr compare` on fabricated run folders (AutoLR, a plain schedule, the depth
search, SILO cycles), the error paths, and one real tiny run."""

import csv
import json
import logging

import pytest
from _fake_datasets import make_imagefolder
from PIL import Image

import autolr
from autolr.cli import main
from autolr.recipe import Recipe, toml_value
from autolr.report import compare, plots, runs, summary

K = 4  # blocks in the fabricated runs
GROUPS = ["stem", *(f"block{i}" for i in range(1, K + 1)), "head"]


def make_run(path, settings=(), rows=(), metrics=None):
    """A run folder as `autolr run` leaves it; settings are ("section.key", value) pairs."""
    data = Recipe().model_dump()
    for key, value in settings:
        section, name = key.split(".")
        data[section][name] = value
    path.mkdir(parents=True)
    toml = [f"[{s}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()) for s, values in data.items()]
    (path / "recipe.toml").write_text("\n".join(toml))
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def final(recall1, before=0.5, **extra):
    keys = {"recall@1": recall1, "recall@2": 0.8, "map@r": 0.3}
    return {**keys, "initial": {**keys, "recall@1": before}, "dataset": "digits", "model": "resnet50",
            "drop_top": 0, "epochs": 3, "wall_time": 12.5, **extra}


def trial(epoch, n, s, accepted, target=None):
    v = [10.0 ** (-8 + i * (1 if accepted else -1)) for i in range(K)]
    return {"kind": "trial", "epoch": epoch, "trial": n, "v": v, "target": target, "lrs": [0.01] * K,
            "sorting_quality": s, "tau": 0.94, "accepted": accepted, "loss": 1.0 / epoch, "seconds": 1.0}


def epoch(e, **extra):
    return {"kind": "epoch", "epoch": e, "loss": 1.0 / e, "seconds": 2.0, "images_per_s": 450.0,
            "lrs": [0.001 * e] * (K + 2), **extra}


def autolr_run(path):
    rows = [trial(1, 1, 0.25, False), trial(1, 2, 0.5, False, target=[1e-8, 2e-8, 3e-8, 4e-8]),
            epoch(1, trials=2, kept_trial=2, sorting_quality=0.5, groups=GROUPS, v=[1e-8] * K,
                  test={"recall@1": 0.6, "recall@2": 0.7, "map@r": 0.2}),
            trial(2, 1, 0.625, False), trial(2, 2, 1.0, True, target=[1e-8, 2e-8, 3e-8, 4e-8]),
            epoch(2, trials=2, kept_trial=2, sorting_quality=1.0, groups=GROUPS, v=[1e-8, 1e-7, 1e-6, 1e-5]),
            trial(3, 1, 1.0, True), epoch(3, trials=1, kept_trial=1, sorting_quality=1.0, groups=GROUPS)]
    settings = [("train.schedule", "autolr"), ("train.epochs", 3), ("eval.every", 1), ("output.name", "auto")]
    return make_run(path, settings, rows, final(0.75))


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100
        im.load()


def test_autolr_run_gets_every_training_plot_and_a_summary(tmp_path):
    run = autolr_run(tmp_path / "auto")
    written = summary.write_report(run)
    names = {p.name for p in written}
    assert names == {"weight_variation.png", "weight_variation_trials.png", "lr_per_group.png", "sorting_quality.png",
                     "loss.png", "test_metrics.png", "summary.md"}
    for p in written[:-1]:
        assert_png(p)
    assert sorted(p.name for p in (run / "report").iterdir()) == sorted(names)  # no temporary file left behind
    md = (run / "report" / "summary.md").read_text()
    assert "| recall@1 | 50.00 | 75.00 | +25.00 |" in md
    assert "- epoch 1: none reached tau, kept trial 2 (2 trial(s))" in md and "- epoch 2: trial 2 accepted" in md
    assert "| 1 | 1.0000 | 2.0 | 450.0 | 2 | 2 | 0.500 | 60.00 |" in md  # epoch 1 with its test recall@1
    assert "tau 0.94" in md and "![Sorting quality per trial](sorting_quality.png)" in md
    assert "- `pruning_cycles.png`: no data in this run" in md


def test_weight_variation_falls_back_to_the_kept_trial_and_lr_names_to_stem_blocks_head(tmp_path):
    run = runs.read_run(autolr_run(tmp_path / "auto"))
    assert [e for e, _ in plots._epoch_variation(run)] == [1, 2, 3]
    assert plots._epoch_variation(run)[2][1] == trial(3, 1, 1.0, True)["v"]  # epoch 3's row has no "v"
    assert plots._group_names({"lrs": [0.1] * 4}) == ["stem", "block1", "block2", "head"]
    assert plots._group_names({"lrs": [0.1] * 3, "groups": ["stem", "neck", "head"]}) == ["stem", "neck", "head"]


def test_plain_schedule_without_trials_skips_the_autolr_plots_and_says_so(tmp_path):
    rows = [epoch(1), epoch(2)]  # an older folder: no "groups", no "v"
    run = make_run(tmp_path / "plain", [("train.schedule", "step")], rows, final(0.7))
    assert {p.name for p in summary.write_report(run)} == {"lr_per_group.png", "loss.png", "test_metrics.png",
                                                           "summary.md"}
    md = (run / "report" / "summary.md").read_text()
    assert "- `weight_variation.png`: no data in this run" in md and "AutoLR trials" not in md
    assert "| 2 | 0.5000 | 2.0 | 450.0 |" in md


def test_depth_search_plots_its_candidates(tmp_path):
    rows = [{"kind": "prune_candidate", "drop_top": d, "score": s, "metric": "recall@1", "seconds": 3.0,
             "estimator": "full"} for d, s in [(0, 0.6), (1, 0.62), (2, 0.63), (3, 0.5)]]
    run = make_run(tmp_path / "search", [("prune.mode", "search")], [*rows, epoch(1)],
                   final(0.7, **{"prune.depth": 2, "drop_top": 2}))
    summary.write_report(run)
    assert_png(run / "report" / "prune_candidates.png")
    md = (run / "report" / "summary.md").read_text()
    assert "Chosen: drop the top 2 blocks." in md and "| 2 | 63.00 | 3.0 |" in md
    assert "top 2 blocks dropped" in md  # the chosen depth, not the recipe's model.drop_top


def silo_run(path, schedule, scores, in_log):
    cycles = [{"kind": "cycle", "cycle": k, "remaining": round(0.8**k, 6), "sparsity": round(1 - 0.8**k, 6),
               "max_lr": 0.03 + 0.01 * k, "metric": "recall@1", "score": s, "lr_schedule": schedule}
              for k, s in enumerate(scores)]
    settings = [("prune.mode", "iterative"), ("prune.lr_schedule", schedule), ("output.name", "silo")]
    metrics = final(scores[-1], **{"prune.lr_schedule": schedule}, **({} if in_log else {"cycles": cycles}))
    return make_run(path, settings, cycles if in_log else [epoch(1)], metrics)


def test_silo_cycles_report_and_compare(tmp_path):
    a = silo_run(tmp_path / "silo-a", "silo", [0.8, 0.79, 0.78, 0.7], in_log=True)
    b = silo_run(tmp_path / "silo-b", "warmup", [0.8, 0.75, 0.7], in_log=False)  # cycles only in metrics.json
    for run in (a, b):
        summary.write_report(run)
        assert_png(run / "report" / "pruning_cycles.png")
    assert "| 3 | 51.2 | 0.0600 | 70.00 |" in (a / "report" / "summary.md").read_text()

    result = compare.write_comparison([a, b], tmp_path / "cmp")
    assert [p.name for p in result.files] == ["compare.md", "compare.csv", "compare_cycles.csv", "compare_cycles.png"]
    assert_png(tmp_path / "cmp" / "compare_cycles.png")
    rows = list(csv.reader((tmp_path / "cmp" / "compare_cycles.csv").open()))
    assert rows[0] == ["run", "schedule", "metric", "100.0", "80.0", "64.0", "51.2"]
    assert rows[1] == ["silo-a", "silo", "recall@1", "80.0000", "79.0000", "78.0000", "70.0000"]  # same name: folders
    assert rows[2] == ["silo-b", "warmup", "recall@1", "80.0000", "75.0000", "70.0000", ""]


def test_compare_writes_md_and_csv_with_blank_cells_and_unfinished_runs(tmp_path, capsys):
    auto = autolr_run(tmp_path / "auto")
    sop = make_run(tmp_path / "sop-run", [("data.name", "sop")], [epoch(1)],
                   {"recall@1": 0.8, "recall@10": 0.9, "map@r": 0.4, "drop_top": 2, "wall_time": 100.0})
    busy = make_run(tmp_path / "busy", [("output.name", "busy")], [epoch(1)])
    assert main(["compare", str(auto), str(sop), str(busy), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Test metrics (%)" in out and "busy (unfinished)" in out and str(tmp_path / "out" / "compare.csv") in out
    rows = list(csv.reader((tmp_path / "out" / "compare.csv").open()))
    assert rows == [
        ["run", "model", "schedule", "drop top", "recall@1", "recall@2", "recall@10", "map@r", "wall time (s)"],
        ["auto", "resnet50", "autolr", "0", "75.0000", "80.0000", "", "30.0000", "12.5000"],
        ["sop-run", "resnet50", "constant", "2", "80.0000", "", "90.0000", "40.0000", "100.0000"],
        ["busy (unfinished)", "resnet50", "constant", "0", "", "", "", "", ""],
    ]
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| auto | resnet50 | autolr | 0 | 75.00 | 80.00 |  | 30.00 | 12.50 |" in md
    assert not (tmp_path / "out" / "compare_cycles.csv").exists()


def test_a_folder_that_is_not_a_run_is_exit_2_naming_it(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{tmp_path} is not an autolr run folder (no recipe.toml)" in err and "Traceback" not in err
    started = tmp_path / "started"
    started.mkdir()
    (started / "recipe.toml").write_text(Recipe().to_toml())
    assert main(["report", str(started)]) == 2  # nothing to report yet
    assert "has no log.jsonl or metrics.json yet" in capsys.readouterr().err
    run = autolr_run(tmp_path / "auto")  # a comparison lists a run stopped before its first epoch
    assert main(["compare", str(run), str(started), "--output", str(tmp_path / "cmp")]) == 0
    assert "started (unfinished)" in (tmp_path / "cmp" / "compare.csv").read_text()


def test_a_failing_plot_is_a_warning_and_the_rest_is_written(tmp_path, monkeypatch, caplog):
    def broken(run):
        raise ValueError("bad data")

    monkeypatch.setitem(plots.PLOTS, "loss.png", ("Training loss", broken))
    run = autolr_run(tmp_path / "auto")
    with caplog.at_level(logging.WARNING, logger="autolr"):
        written = summary.write_report(run)
    assert "loss.png" not in {p.name for p in written} and (run / "report" / "test_metrics.png").exists()
    assert "could not draw loss.png: ValueError: bad data" in caplog.text
    assert "- `loss.png`: failed (ValueError: bad data)" in (run / "report" / "summary.md").read_text()


def test_report_of_a_real_tiny_autolr_run(tmp_path, capsys):
    data = make_imagefolder(tmp_path, per_class=8).folder  # 32 training images: seconds, not minutes
    recipe = autolr.load_recipe("quickstart", [
        "model.name=test_resnet", "data.name='imagefolder'", f"data.root={str(data)!r}", "data.image_size=16",
        "data.workers=0", "data.batch_size=8", "eval.flip=false", "train.epochs=2", "autolr.max_trials=2",
        "eval.every=1",
    ])
    run = autolr.run(recipe, output=tmp_path / "run").run_dir
    assert main(["report", str(run)]) == 0
    printed = capsys.readouterr().out.split()
    assert str(run / "report" / "summary.md") in printed
    for name in ("weight_variation.png", "weight_variation_trials.png", "lr_per_group.png", "sorting_quality.png",
                 "loss.png", "test_metrics.png"):
        assert_png(run / "report" / name)
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"| recall@1 | {100 * metrics['initial']['recall@1']:.2f} | {100 * metrics['recall@1']:.2f} |" in (
        run / "report" / "summary.md").read_text()


def lr_run(path, blocks=16, epochs=6, every=None):
    """Epoch rows of a deep AutoLR run: blocks ramp up, all LRs x0.2 after epoch 4."""
    groups = ["stem", *(f"block{i}" for i in range(1, blocks + 1)), "neck", "head"]
    rows = []
    for e in range(1, epochs + 1):
        scale = 0.2 if e > 4 else 1.0
        lrs = [5e-4 * scale, *(1e-3 * (1 + 0.1 * i) * scale for i in range(blocks)), 1e-3 * scale, 1e-2 * scale]
        test = {"test": {"recall@1": 0.5 + e / 100, "map@r": 0.2}} if every and e % every == 0 else {}
        rows.append({"kind": "epoch", "epoch": e, "loss": 1.0 / e, "lrs": lrs, "groups": groups, **test})
    return make_run(path, [("train.schedule", "autolr")], rows, final(0.8))


def test_lr_plot_is_a_block_by_epoch_heatmap_with_the_head_apart(tmp_path):
    run = runs.read_run(lr_run(tmp_path / "deep"))
    fig = plots.plot_lrs(run)
    lines, heat = fig.axes[0], fig.axes[1]
    assert [line.get_label() for line in lines.get_lines()] == ["stem", "neck", "head", "block1 (lowest)", "block16 (highest)"]
    mesh = heat.collections[0].get_array().reshape(16, 6)  # [block, epoch]
    assert mesh[0, 0] == pytest.approx(1e-3) and mesh[15, 5] == pytest.approx(1e-3 * 2.5 * 0.2)
    head = lines.get_lines()[2]
    assert head.get_linestyle() == "--" and list(head.get_ydata()) == [1e-2] * 4 + [2e-3] * 2


def test_test_metrics_join_only_epochs_measured_one_apart(tmp_path):
    run = runs.read_run(lr_run(tmp_path / "gaps", blocks=4, epochs=6, every=3))  # measured: 0, 3, 6
    fig = plots.plot_test_metrics(run)
    segments = [tuple(line.get_xdata()) for line in fig.axes[0].get_lines() if line.get_linestyle() != "None"]
    assert segments == []  # 0 -> 3 -> 6: nothing drawn through epochs 1, 2, 4, 5
    markers = {line.get_label(): list(line.get_xdata()) for line in fig.axes[0].get_lines() if line.get_linestyle() == "None"}
    assert markers["recall@1"] == [0, 3, 6] and markers["map@r"] == [0, 3, 6]
    run = runs.read_run(lr_run(tmp_path / "every", blocks=4, epochs=3, every=1))
    segments = [tuple(line.get_xdata()) for line in plots.plot_test_metrics(run).axes[0].get_lines() if line.get_linestyle() != "None"]
    assert (0, 1) in segments and (2, 3) in segments
