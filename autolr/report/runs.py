"""A run folder read back as plain data (`Run`): recipe, log rows, metrics. The reports, plots and
comparisons (`summary.py`, `plots.py`, `compare.py`) are all drawn from it.

Everything here reads only what a run folder holds (recipe.toml, log.jsonl, metrics.json), so a report
can be redrawn for any run, finished or not, without torch. The recipe is read as plain TOML rather than
validated, so that a run recorded under an older schema still reports.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolr import fileio
from autolr.errors import AutolrError
from autolr.recipe import tomllib

METRIC_PREFIXES = ("recall@", "map@", "accuracy")


BLOCK = re.compile(r"block(\d+)$")  # a block's param group name


@dataclass
class Run:
    path: Path
    recipe: dict[str, Any]
    rows: list[dict[str, Any]]
    metrics: dict[str, Any] | None  # None: the run has not finished

    def rows_of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == kind]

    def setting(self, key: str, default: Any = None) -> Any:
        """A recipe value by its dotted name, e.g. `train.schedule`."""
        section, name = key.split(".")
        return self.recipe.get(section, {}).get(name, default)

    @property
    def name(self) -> str:
        return self.setting("output.name") or self.path.name

    @property
    def schedule(self) -> str:
        """The LR schedule that tells runs apart: SILO's per-cycle schedule, else train.schedule."""
        if self.setting("prune.mode") == "iterative":
            return self.setting("prune.lr_schedule", "?")
        return self.setting("train.schedule", "?")

    @property
    def initial(self) -> dict[str, Any]:
        """Test metrics before fine-tuning: in metrics.json once finished, in the checkpoints before."""
        if self.metrics and "initial" in self.metrics:
            return self.metrics["initial"]
        f = self.path / "checkpoints" / "initial.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    @property
    def cycles(self) -> list[dict[str, Any]]:
        return self.rows_of("cycle") or (self.metrics or {}).get("cycles", [])

    @property
    def candidates(self) -> list[dict[str, Any]]:
        return self.rows_of("prune_candidate") or (self.metrics or {}).get("prune.candidates", [])


def read_run(run_dir: str | Path, *, started: bool = True) -> Run:
    """A run folder's recipe, log rows and metrics; an error that says what to give for anything else.

    `started`: the run must have logged something (a report of nothing is an error; a comparison lists
    such a run as unfinished)."""
    path = Path(run_dir)
    if not (path / "recipe.toml").is_file():
        raise AutolrError(f"{path} is not an autolr run folder (no recipe.toml): give the folder that "
                          "`autolr run` printed, which holds recipe.toml, log.jsonl and metrics.json")
    metrics_file = path / "metrics.json"
    if started and not (path / "log.jsonl").is_file() and not metrics_file.is_file():
        raise AutolrError(f"{path} has no log.jsonl or metrics.json yet: the run has not finished an epoch; "
                          "report it once it has")
    try:
        recipe = tomllib.loads((path / "recipe.toml").read_text())
    except tomllib.TOMLDecodeError as e:
        raise AutolrError(f"{path / 'recipe.toml'}: not valid TOML ({e})") from None
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    return Run(path, recipe, fileio.read_jsonl(path / "log.jsonl"), metrics)


def metric_keys(dicts: list[dict[str, Any]]) -> list[str]:
    """The metric names in these dicts, Recall@K by K first, then MAP@R and accuracy."""
    keys = {k for d in dicts for k, v in d.items() if k.startswith(METRIC_PREFIXES) and isinstance(v, (int, float))}

    def order(key: str) -> tuple[int, float, str]:
        k = re.fullmatch(r"recall@(\d+)", key)
        return (0, int(k[1]), key) if k else (1, 0, key)

    return sorted(keys, key=order)


def pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def num(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)
