"""The CLI in-process: run, validate, recipes, resume and the error paths (exit code 2, no traceback)."""

import json

import pytest

from autolr.cli import main

TINY = ["model.name=resnet18", "data.image_size=32", "data.workers=0", "data.batch_size=32", "train.epochs=1", "eval.batch_size=256"]


def sets(*items):
    return [arg for item in items for arg in ("--set", item)]


def test_help_and_recipes(capsys):
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out
    assert main(["recipes"]) == 0
    assert "quickstart" in capsys.readouterr().out


def test_validate_ok_and_bad(tmp_path, capsys):
    assert main(["validate", "quickstart"]) == 0
    assert "quickstart: ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nbatchsize = 3\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "did you mean data.batch_size?" in err and "Traceback" not in err


def test_bad_override_is_exit_2(capsys):
    assert main(["validate", "quickstart", "--set", "train.epochs=zero"]) == 2
    assert "bad value for train.epochs" in capsys.readouterr().err


def test_debug_shows_the_traceback():
    from autolr.errors import AutolrError

    with pytest.raises(AutolrError):
        main(["--debug", "validate", "no-such-recipe"])


def test_run_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    assert main(["run", "quickstart", "--output", str(out), *sets(*TINY)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["something"]  # nothing written


def test_resume_without_a_run_is_exit_2(tmp_path, capsys):
    assert main(["run", "quickstart", "--resume", *sets(f"output.dir={json.dumps(str(tmp_path))}")]) == 2
    assert "no run of 'quickstart'" in capsys.readouterr().err


def test_cli_start_imports_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, autolr, autolr.cli, autolr.adapters; autolr.adapters.adapters(); print(sorted(m for m in ('torch', 'timm', 'accelerate', 'datasets', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[dat]\nname = 'digits'\n", "unknown section [dat]; did you mean [data]?"),
        ("[data]\nbatchsize = 3\n", "unknown key data.batchsize; did you mean data.batch_size?"),
        ("[model]\nlr = 0.1\n", "did you mean train.lr?"),
        ("x = 1\n", "unknown section [x]"),
        ("[train]\nschedule = 'sgd'\n", "bad value for train.schedule: 'sgd'"),
        ("[train]\nmilestones = ['x']\n", "bad value for train.milestones[0]: 'x'"),
        ("[data]\nimage_size = 4\n", "bad value for data.image_size: 4"),
        ("[train\n", "not valid TOML"),
    ],
)
def test_recipe_errors_print_in_full(tmp_path, capsys, toml, message):
    """The CLI prints the whole message: section names in [brackets] are not eaten as markup."""
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    assert main(["validate", str(bad)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume", "--overwrite"], "contradict each other"),
        (["--set", "output=1"], "expected section.key=value"),
        (["--set", "data.batch_size=5000"], "larger than the 901 training images"),
        (["--set", "model.drop_top=99"], "drop_top"),
    ],
)
def test_run_errors_are_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["run", "quickstart", "--output", str(out), *sets(*TINY), *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_output_that_is_a_file_or_not_a_run(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["run", "quickstart", "--output", str(f), *sets(*TINY)]) == 2
    assert "is a file" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    assert main(["run", "quickstart", "--output", str(other), "--resume", *sets(*TINY)]) == 2
    assert "holds no autolr run" in capsys.readouterr().err


VALIDATE_TINY = ["model.name=test_resnet"]  # 4 blocks, built on the meta device: no weights, no images


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.name=resnet5O"], "model.name = 'resnet5O' is not a timm model; did you mean resnet50"),
        (["model.name=test_resnet.bogus"], "test_resnet has no pretrained tag 'bogus'; its tags are r160_in1k"),
        (["model.name=levit_128s", "data.image_size=40"], "data.image_size = 40: levit_128s takes 224 px images only"),
        (["model.drop_top=4"], "model.drop_top = 4 is impossible for test_resnet with 4 blocks"),
        (["model.drop_top=3"], "train.schedule = 'autolr' needs at least 2 blocks; test_resnet has 1"),
        (["prune.mode='search'", "prune.max_depth=3"], "prune.max_depth = 3: test_resnet has 4 blocks"),
        (["model.checkpoint='/no/such/weights.safetensors'"], "model.checkpoint = '/no/such/weights.safetensors': no such file"),
        (["data.name='cub200'", "data.root='/no/such/CUB_200_2011'"], "/no/such/CUB_200_2011"),
    ],
)
def test_validate_runs_the_checks_run_makes_before_training(capsys, overrides, message):
    """Each pre-training check of `autolr run` fails `autolr validate` too: exit 2, one line, the fix."""
    assert main(["validate", "quickstart", *sets(*VALIDATE_TINY, *overrides)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert err.startswith("error:") and err.count("error:") == 1


def test_validate_passes_what_run_accepts_and_no_data_skips_the_data(capsys):
    assert main(["validate", "quickstart", *sets(*VALIDATE_TINY, "model.drop_top=2", "model.name=test_resnet.r160_in1k")]) == 0
    assert main(["validate", "quickstart", "--no-data", *sets("data.name='cub200'", "data.root='/no/such/CUB'")]) == 0
    assert main(["validate", "search_cub", "--no-data"]) == 0  # pretrained = true: no weights fetched (offline)
    assert capsys.readouterr().out.count(": ok") == 3


def test_validate_names_a_broken_entry_point(monkeypatch, capsys):
    """A third-party adapter package that fails to import is one error naming its entry point."""
    from importlib.metadata import EntryPoint

    import autolr.adapters as adapters

    broken = EntryPoint(name="mynet", value="no_such_module_autolr_test", group="autolr.adapters")
    monkeypatch.setattr(adapters, "entry_points", lambda group: [broken] if group == "autolr.adapters" else [])
    monkeypatch.setattr(adapters, "_LOADED", False)
    assert main(["validate", "quickstart", *sets(*VALIDATE_TINY)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "entry point autolr.adapters mynet = 'no_such_module_autolr_test'" in err
    assert "ModuleNotFoundError" in err and "reinstall" in err


def test_load_plugins_loads_entry_points_once_and_retries_a_failure(monkeypatch):
    from importlib.metadata import EntryPoint

    import autolr.adapters as adapters

    from autolr.errors import AutolrError

    calls = []
    good = EntryPoint(name="ok", value="json", group="autolr.adapters")  # any importable module
    monkeypatch.setattr(adapters, "entry_points", lambda group: calls.append(group) or [good])
    monkeypatch.setattr(adapters, "_LOADED", False)
    adapters.load_plugins()
    adapters.load_plugins()
    assert calls == ["autolr.adapters"]
    broken = EntryPoint(name="bad", value="no_such_module_autolr_test", group="autolr.adapters")
    monkeypatch.setattr(adapters, "entry_points", lambda group: calls.append(group) or [broken])
    monkeypatch.setattr(adapters, "_LOADED", False)
    for _ in range(2):  # not marked loaded after a failure: the second call fails the same way
        with pytest.raises(AutolrError, match="entry point autolr.adapters bad"):
            adapters.load_plugins()
    assert len(calls) == 3
