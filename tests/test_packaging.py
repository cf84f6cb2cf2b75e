"""autolr as a user installs it: a wheel (not `-e`) holds every module and recipe and runs the quickstart
from another folder; a strict editable install imports the real package from a clone's parent folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from _install import copy_checkout, isolated_python, pip_install

ROOT = Path(__file__).resolve().parents[1]
# the cheapest quickstart: timm's 4-block test_resnet at 16 px, one epoch, one AutoLR trial
TINY_RUN = ["model.name=test_resnet", "data.image_size=16", "train.epochs=1", "autolr.max_trials=1",
            "eval.flip=false", "eval.batch_size=512"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout"),
]


def expected_members() -> dict[str, str]:
    """Source file -> its path inside the installed package, for every module and recipe."""
    out = {}
    for folder, package in (("autolr", "autolr"), ("adapters", "autolr/adapters"), ("recipes", "autolr/recipes")):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
                rel = path.relative_to(ROOT / folder).as_posix()
                out[f"{folder}/{rel}"] = f"{package}/{rel}"
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """A wheel and an sdist built from a copy of the checkout, as `pip install .` would build them."""
    tmp = tmp_path_factory.mktemp("pkg")
    src, dist = copy_checkout(tmp / "src"), tmp / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    sdist = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta as b; print(b.build_sdist({str(dist)!r}))"],
                           cwd=src, capture_output=True, text=True, timeout=300)
    assert sdist.returncode == 0, sdist.stderr
    return {"wheel": next(dist.glob("*.whl")), "sdist": dist / sdist.stdout.split()[-1], "tmp": tmp}


def test_wheel_and_sdist_hold_every_module_and_recipe(built):
    expected = expected_members()
    assert "autolr/data/__init__.py" in expected.values() and "autolr/recipes/quickstart.toml" in expected.values()
    wheel = set(zipfile.ZipFile(built["wheel"]).namelist())
    assert sorted(set(expected.values()) - wheel) == []
    assert not any(name.startswith(("adapters/", "recipes/")) for name in wheel)  # never a top-level `adapters`
    with tarfile.open(built["sdist"]) as tar:
        sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert sorted(set(expected) - sdist) == []


def test_installed_wheel_runs_the_quickstart_from_another_folder(built):
    target, elsewhere = built["tmp"] / "site", built["tmp"] / "elsewhere"
    elsewhere.mkdir()
    pip_install(built["wheel"], "--target", str(target))
    python, env = isolated_python(target)
    where = subprocess.run([*python, "-c", "import autolr, autolr.data, autolr.adapters.resnet as r, autolr.recipe as q;"
                            "print(autolr.__file__, autolr.data.__file__, r.__file__, q.shipped_recipes()['quickstart'])"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert all(Path(p).is_relative_to(target) for p in where.stdout.split()), where.stdout
    sets = [a for item in TINY_RUN for a in ("--set", item)]
    run = subprocess.run([*python, "-m", "autolr", "run", "quickstart", "--output", "out", *sets],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (elsewhere / "out" / "metrics.json").is_file() and (elsewhere / "out" / "model.safetensors").is_file()
