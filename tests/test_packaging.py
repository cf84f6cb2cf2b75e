"""autolr as a user installs it: a wheel (not `-e`) holds every module and recipe and runs the quickstart
from another folder; a strict editable install imports the real package from a clone's parent folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
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
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12 / 3.11.4
        tar.extractall(built["tmp"] / "from-sdist", **safe)
    assert sorted(set(expected) - sdist) == []
    # the sdist is complete enough to build the same wheel (setup.py, README and recipes travel with it)
    unpacked = next((built["tmp"] / "from-sdist").iterdir())
    again = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
                            "-w", str(built["tmp"] / "dist2"), str(unpacked)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rebuilt = set(zipfile.ZipFile(next((built["tmp"] / "dist2").glob("*.whl"))).namelist())
    assert {n for n in rebuilt if "dist-info" not in n} == {n for n in wheel if "dist-info" not in n}


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


def _import_from(folder: Path, site_dir: Path | None) -> subprocess.CompletedProcess:
    """`import autolr` in `folder`, with only `site_dir`'s install of autolr (its .pth files processed)."""
    python, env = isolated_python(Path(sysconfig.get_paths()["purelib"]))
    add_site = f"import site; site.addsitedir({str(site_dir)!r}); " if site_dir else ""
    code = (add_site + "import autolr, autolr.adapters, autolr.data; from autolr.recipe import shipped_recipes;"
            " print(autolr.__file__, autolr.adapters.__file__, shipped_recipes()['quickstart'])")
    return subprocess.run([*python, "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_editable_install_imports_the_package_from_a_clones_parent_folder(tmp_path):
    """`git clone ... autolr; pip install -e autolr` then `python -c "import autolr"` beside the clone:
    the default (lenient) editable finder ranks after the folder `./autolr`, an empty namespace
    package; the Makefile's strict mode puts a real path entry on sys.path, and the package wins."""
    clone = copy_checkout(tmp_path / "autolr")
    prefix = {mode: tmp_path / f"prefix-{mode}" for mode in ("lenient", "strict")}
    for mode, where in prefix.items():
        pip_install(clone, "--prefix", str(where), "--config-settings", f"editable_mode={mode}", "-e")
    site_dir = {m: Path(sysconfig.get_path("purelib", vars={"base": str(p), "platbase": str(p)})) for m, p in prefix.items()}
    lenient = _import_from(tmp_path, site_dir["lenient"])
    assert lenient.stdout.split()[:1] == ["None"], lenient.stderr  # the bug: a namespace package, no __file__
    strict = _import_from(tmp_path, site_dir["strict"])
    assert strict.returncode == 0, strict.stderr
    package, adapters, recipe = map(Path, strict.stdout.split())
    assert package.name == "__init__.py" and package.resolve() == (clone / "autolr" / "__init__.py").resolve()
    assert adapters.resolve() == (clone / "adapters" / "__init__.py").resolve() and recipe.is_file()
    inside = _import_from(clone, site_dir["strict"])  # from the clone itself: ./autolr is found first
    assert inside.returncode == 0, inside.stderr
    assert Path(inside.stdout.split()[1]).resolve() == (clone / "adapters" / "__init__.py").resolve()
