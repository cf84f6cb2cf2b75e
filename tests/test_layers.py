"""The package's layering (CONTRIBUTING.md): import-linter's contracts hold on the package as installed,
a new upward import (lazy ones too) breaks them, no module imports another's private names, and every
module stays short enough to read."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _layers  # noqa: E402

import autolr  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                                reason="import-linter is in the dev extra: pip install -e '.[dev]'")


def test_the_import_contracts_hold(tmp_path):
    result = _layers.lint_imports(_layers.installed_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def lint_with(tmp_path, module: str, code: str):
    """lint-imports on an installed-layout copy whose `module` (a path under autolr/) ends with `code`."""
    copy = _layers.installed_copy(tmp_path)
    path = copy / "autolr" / module
    path.write_text(path.read_text() + code)
    return _layers.lint_imports(copy)


def test_an_upward_import_inside_a_function_breaks_the_layers(tmp_path):
    result = lint_with(tmp_path, "eval/metrics.py", "\n\ndef _late():\n    from autolr.train.loop import fit\n\n    return fit\n")
    assert result.returncode == 1
    assert "autolr.eval.metrics -> autolr.train.loop" in result.stdout


def test_one_mode_importing_another_breaks_their_independence(tmp_path):
    result = lint_with(tmp_path, "modes/depth_search.py", "\nfrom autolr.modes.finetune import finetune  # noqa\n")
    assert result.returncode == 1 and "Modes compose the loop; none imports another BROKEN" in result.stdout


def test_no_module_imports_a_private_name_of_another():
    assert _layers.private_imports() == []


def test_the_private_name_check_finds_each_form(tmp_path):
    pkg = tmp_path / "autolr"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "from autolr.train.loop import _helper\n"
        "from autolr import rundir\n"
        "import autolr.data.build as build\n"
        "def f():\n    return rundir._flat, build._Relabel\n"
        "from autolr.adapters.surgery import truncate\n"  # public: fine
    )
    found = _layers.private_imports({"autolr": pkg})
    assert [line.split(": ", 1)[1] for line in found] == [
        "imports autolr.train.loop._helper", "uses autolr.rundir._flat", "uses autolr.data.build._Relabel"]


def test_every_module_is_short_enough_to_read():
    long = {str(p.relative_to(_layers.ROOT)): n for folder in _layers.SOURCES.values() for p in folder.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_the_public_api_still_resolves_lazily():
    for name in autolr.__all__:
        assert getattr(autolr, name) is not None, name
    assert autolr.run.__module__ == "autolr.runner" and autolr.silo_max_lr(0) == pytest.approx(0.03)
