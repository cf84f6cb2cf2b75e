"""Package discovery for the one layout pyproject.toml cannot describe with `packages.find`.

`adapters/` and `recipes/` sit at the top of the repository but ship as `autolr.adapters` and
`autolr.recipes` (`adapters` is an unrelated PyPI name and must never be a top-level import). `find:`
only names packages relative to the folder it searches, so it cannot add that prefix: this file does,
and every subpackage found under the three folders ships with no edit here (the wheel test checks).
"""

from setuptools import find_namespace_packages, setup

ROOTS = {"autolr": "autolr", "autolr.adapters": "adapters", "autolr.recipes": "recipes"}


def _packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        subpackages = find_namespace_packages(where=folder, exclude=["*__pycache__*"])
        found += [name] + [f"{name}.{sub}" for sub in subpackages if f"{name}.{sub}" not in ROOTS]
    return found


setup(package_dir=ROOTS, packages=_packages())
