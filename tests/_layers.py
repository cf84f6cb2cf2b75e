"""The package's import rules, checked on the package as it installs (`make lint` and tests/test_layers.py).

1. `lint-imports` with the contracts in pyproject.toml ([tool.importlinter]): the layers, and the
   modes independent of each other. In the checkout `adapters/` sits beside `autolr/` and reaches the
   package as `autolr.adapters` only through `autolr/__init__.py`'s search path, which grimp does not
   follow; so the check runs on a copy laid out as the wheel installs it (`autolr/adapters/...`).
2. No module imports a private name (`_x`) of another module, neither `from m import _x` nor `m._x`.

    python tests/_layers.py        # prints each problem; exit code 1 if there is one
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"autolr": ROOT / "autolr", "autolr.adapters": ROOT / "adapters"}


def installed_copy(dest: Path) -> Path:
    """`autolr/` with `adapters/` inside it as `autolr/adapters/`, Python files only; returns dest."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "autolr", dest / "autolr", ignore=skip)
    shutil.copytree(ROOT / "adapters", dest / "autolr" / "adapters", ignore=skip)
    return dest


def lint_imports(copy: Path) -> subprocess.CompletedProcess:
    """`lint-imports` over the installed-layout copy (first on sys.path), with the checkout's contracts."""
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run([str(exe), str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=copy, env=env, capture_output=True, text=True)


def module_name(package: str, folder: Path, path: Path) -> str:
    parts = path.relative_to(folder).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((package, *parts))


def private_imports(sources: dict[str, Path] = SOURCES) -> list[str]:
    """Every `from autolr.m import _x`, `import autolr.m._x` and `m._x` (m an imported autolr module),
    in the packages `sources` maps to their folders."""
    found = []
    for package, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            here = module_name(package, folder, path)
            tree = ast.parse(path.read_text(), str(path))
            modules = {}  # local name -> autolr module it stands for
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autolr"):
                    if any(p.startswith("_") for p in node.module.split(".")):
                        found.append(f"{_shown(path)}:{node.lineno}: imports module {node.module}")
                    for alias in node.names:
                        if alias.name.startswith("_") and f"{node.module}.{alias.name}" != here:
                            found.append(f"{_shown(path)}:{node.lineno}: imports {node.module}.{alias.name}")
                        modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.startswith("autolr"):
                            if any(p.startswith("_") for p in alias.name.split(".")):
                                found.append(f"{_shown(path)}:{node.lineno}: imports module {alias.name}")
                            modules[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or "autolr"
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                        and isinstance(node.value, ast.Name) and node.value.id in modules):
                    found.append(f"{_shown(path)}:{node.lineno}: uses {modules[node.value.id]}.{node.attr}")
    return found


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> int:
    problems = private_imports()
    for line in problems:
        print(line)
    with tempfile.TemporaryDirectory() as tmp:
        result = lint_imports(installed_copy(Path(tmp)))
    print(result.stdout + result.stderr, end="")
    return 1 if problems or result.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
