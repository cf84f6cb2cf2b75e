"""autolr: fine-tune timm backbones with layer-wise pruning and automatic per-block learning rates.

The public API is exported lazily (PEP 562), so `import autolr` and `autolr --help` stay fast: torch,
timm, accelerate and datasets load only when something that needs them is used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"

# Imported straight from a source checkout (its root is the current folder or on sys.path): the
# installed package holds autolr/adapters and autolr/recipes, the checkout has them beside autolr/.
# Searching the checkout's root too finds them under the same names; an install never needs this.
_here = Path(__file__).parent  # not resolved: a strict editable install's links sit in a complete tree
if not (_here / "adapters").is_dir() and (_here.parent / "adapters" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 - a package's __path__ is defined at import
del _here

_EXPORTS = {
    "run": "autolr.runner",
    "RunResult": "autolr.runner",
    "load_recipe": "autolr.recipe",
    "Recipe": "autolr.recipe",
    "recall_at_k": "autolr.eval.metrics",
    "map_at_r": "autolr.eval.metrics",
    "recall_and_map": "autolr.eval.metrics",
    "load_model": "autolr.model",
    "weight_variation": "autolr.train.autolr",
    "sorting_quality": "autolr.train.autolr",
    "initial_targets": "autolr.train.autolr",
    "repair_targets": "autolr.train.autolr",
    "renew_lrs": "autolr.train.autolr",
    "silo_max_lr": "autolr.train.schedules",
    "AutolrError": "autolr.errors",
    "register_adapter": "autolr.adapters",
    "get_adapter": "autolr.adapters",
    "Adapter": "autolr.adapters",
    "load_plugins": "autolr.adapters",
    "BlockMap": "autolr.adapters",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from autolr.adapters import Adapter, BlockMap, get_adapter, load_plugins, register_adapter
    from autolr.errors import AutolrError
    from autolr.eval.metrics import map_at_r, recall_and_map, recall_at_k
    from autolr.model import load_model
    from autolr.recipe import Recipe, load_recipe
    from autolr.runner import RunResult, run
    from autolr.train.autolr import (
        initial_targets,
        renew_lrs,
        repair_targets,
        sorting_quality,
        weight_variation,
    )
    from autolr.train.schedules import silo_max_lr


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'autolr' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
