"""Install helpers for the tests that use autolr, or a user's package, as installed (never `-e`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_checkout(dest: Path) -> Path:
    """The files a clean clone would have (tracked + new, not ignored): no build/, egg-info or caches."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():  # a tracked file deleted in the working tree is not part of it
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def pip_install(source: Path, *extra: str) -> None:
    """Install offline and without dependencies (the venv has them) into the `--target`/`--prefix` in `extra`.

    `--ignore-installed` always: with `--prefix`, pip would otherwise first uninstall the autolr that the
    test's own venv runs on.
    """
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
           "--ignore-installed", "--disable-pip-version-check", *extra, str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def isolated_python(target: Path) -> tuple[list[str], dict[str, str]]:
    """A python that sees `target` and the venv's dependencies but not the venv's editable autolr: `-S`
    skips the .pth files (the editable finder would serve any module the wheel left out)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-S"], env
