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

    code = "import sys, autolr, autolr.cli, autolr.adapters; autolr.adapters.adapters(); print(sorted(m for m in ('torch', 'timm', 'accelerate', 'datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
