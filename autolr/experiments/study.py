"""`autolr study`: does a schedule help, by how much, at what cost? Arms x seeds, paired over seeds.

Every combination of the arms (as a sweep's grids) runs once per seed, `train.seed = 0..N-1`, each a
full run: trained on all training classes and scored on the test split. A study compares; it selects
nothing (choose the settings it compares with `autolr sweep` on the validation split first). Runs live
in `DIR/<arm>/seed-<s>/`; a finished run is read back, an interrupted one resumes from its last
checkpoint, so `--resume` continues a killed study and a study extended by more seeds or values only
runs what is new.

The statistics are a pure function of the rows of `study.csv` (`summarize`), so anyone can recompute
`study.json` from the csv alone: per arm the mean and a Student-t interval of every metric and of the
cost, and per arm against the baseline the paired difference over the seeds both finished.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolr import fileio, runner
from autolr.console import say
from autolr.errors import AutolrError, Diverged
from autolr.recipe import Recipe, load_recipe, tomllib
from autolr.report.study import COST_KEYS, arm_label, markdown, plot, read_csv, summarize  # noqa: F401 - read_csv: API
from autolr.rundir import flat, grid_folder, is_main_process, launcher_state, main_reads

# Keys whose difference between a finished run and the study's recipe does not change what it measured.
NOT_COMPARED = ("output.", "data.workers", "data.cache_dir", "eval.batch_size", "train.log_every",
                "train.keep_checkpoints")


@dataclass
class Arm:
    key: str  # section.key
    values: list[str]  # as typed (TOML syntax)


@dataclass
class StudyRun:
    values: dict[str, str]  # arm key -> value as typed
    seed: int
    recipe: Recipe
    folder: Path
    metrics: dict[str, Any] | None = None  # None until run; {} when it diverged
    cost: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def arm(self) -> str:
        return arm_label(self.values)


@dataclass
class StudyResult:
    folder: Path
    arms: list[Arm]
    baseline: dict[str, str]  # the one arm key and value the others are paired against
    seeds: int
    metric: str  # the main metric: recall@1, or accuracy for classification
    runs: list[StudyRun]
    summary: dict[str, Any] = field(default_factory=dict)


def parse_arm(text: str) -> Arm:
    """`section.key=v1,v2,...`, or `section={k=v, ...},{...}`: an arm whose values set several keys of a
    section at once (a schedule with its own LR). Commas inside brackets and braces stay in one value."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    values = [v.strip() for v in split_values(raw) if v.strip()]
    if not sep or not key or not values:
        raise AutolrError(f"--arm {text!r}: expected section.key=v1,v2,..., e.g. --arm train.schedule=autolr,constant")
    if len(set(values)) < len(values):
        raise AutolrError(f"--arm {text!r} repeats a value: give each value once")
    arm = Arm(key, values)
    for value in values:
        if any(k == "train.seed" for k in value_sets(arm.key, value)):
            raise AutolrError("--arm train.seed: the seeds come from --seeds N (train.seed = 0..N-1); arm another key")
    return arm


def split_values(raw: str) -> list[str]:
    """Split at the commas outside [...] and {...}."""
    parts, depth, current = [], 0, ""
    for ch in raw:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def value_sets(key: str, value: str) -> dict[str, str]:
    """The recipe keys one arm value sets: `{key: value}`, or for `section={a=1, b="x"}` each key in it."""
    if "." in key:
        return {key: value}
    try:
        table = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        table = None
    if not isinstance(table, dict) or not table:
        raise AutolrError(f"--arm {key}={value}: an arm over a whole section takes TOML inline tables, e.g."
                          f' --arm \'{key}={{schedule="step", lr=0.03}},{{schedule="constant"}}\'; or arm one key:'
                          f" --arm {key}.KEY=V1,V2")
    return {f"{key}.{k}": toml_value(v) for k, v in table.items()}


def toml_value(value: Any) -> str:
    """A parsed TOML value written back (for --set)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def parse_baseline(text: str | None, arms: list[Arm]) -> dict[str, str]:
    """`KEY=V` naming one arm's value; default: the first value of the first arm."""
    if not text:
        return {arms[0].key: arms[0].values[0]}
    key, _, value = (part.strip() for part in text.partition("="))
    by_key = {a.key: a for a in arms}
    if key not in by_key:
        raise AutolrError(f"--baseline {text!r}: {key!r} is not an arm; use one of {', '.join(by_key)} (KEY=VALUE)")
    if value not in by_key[key].values:
        raise AutolrError(f"--baseline {text!r}: {value!r} is not a value of --arm {key}; use one of"
                          f" {', '.join(by_key[key].values)}")
    return {key: value}


def make_runs(recipe: str | Path, arms: list[Arm], seeds: int, folder: Path, overrides: list[str] = ()) -> list[StudyRun]:
    """Every run's recipe, validated before anything runs: a bad key or value names its --arm."""
    if not arms:
        raise AutolrError("a study needs at least one --arm KEY=V1,V2 (e.g. --arm train.schedule=autolr,constant)")
    if seeds < 1:
        raise AutolrError(f"--seeds {seeds}: a study needs at least 1 seed (3 or more for useful intervals)")
    if len({a.key for a in arms}) < len(arms):
        raise AutolrError("an --arm key is given twice: give each key once, with all its values")
    if any(o.split("=", 1)[0].strip() == "train.seed" for o in overrides):
        raise AutolrError("--set train.seed: a study sets train.seed = 0..N-1 itself (--seeds N); remove the --set")
    load_recipe(recipe, list(overrides))  # a mistake in the recipe or --set is named as such
    runs = []
    for combo in itertools.product(*(a.values for a in arms)):
        values = dict(zip((a.key for a in arms), combo, strict=True))
        sets = [f"{k}={v}" for key, value in values.items() for k, v in value_sets(key, value).items()]
        for seed in range(seeds):
            try:
                run_recipe = load_recipe(recipe, [*overrides, *sets, f"train.seed={seed}"])
            except AutolrError as e:
                raise AutolrError(f"--arm {' '.join(sets)}: {e}") from None
            if run_recipe.prune.mode == "iterative":
                raise AutolrError(f"--arm {' '.join(sets)}: prune.mode = 'iterative' runs are not studied yet;"
                                  " study fixed-depth or searched-depth runs")
            runs.append(StudyRun(values, seed, run_recipe, folder / arm_folder(values) / f"seed-{seed}"))
    return runs


def arm_folder(values: dict[str, str]) -> str:
    """An arm as a folder name: `train.schedule=autolr_train.lr=0.01`."""
    return "_".join(f"{k}={_slug(v)}" for k, v in values.items())


def _slug(value: str) -> str:
    return re.sub(r"[^\w.+=-]", "", re.sub(r",\s*", "+", value)) or "empty"


def _say(text: str) -> None:
    """Progress on stderr, from the main process."""
    if is_main_process():
        say(text)


def study_folder(recipe: Recipe, output: str | Path | None, resume: bool) -> Path:
    """`--output`, a new `output.dir/<name>-study-<timestamp>`, or with --resume the newest such study."""
    return grid_folder(recipe, output, resume, "study", "finished runs", say)


def check_same_recipe(run: StudyRun) -> None:
    """A finished run is reused only if it ran this very recipe: a study must compare like with like.

    Not compared: where outputs go, hardware knobs, [autolr] in a run of another schedule (unused there),
    and keys the saved recipe predates.
    """
    saved_file = run.folder / "recipe.toml"
    if not saved_file.is_file():
        return
    saved = flat(load_recipe(saved_file).model_dump())
    given = flat(run.recipe.model_dump())
    ignored = NOT_COMPARED + (() if run.recipe.train.schedule == "autolr" else ("autolr.",))  # unused keys
    differ = [k for k in given if k in saved and not k.startswith(ignored) and saved[k] != given[k]]
    if differ:
        shown = "; ".join(f"{k} = {given[k]!r} here, {saved.get(k)!r} in the run" for k in differ[:3])
        raise AutolrError(f"{run.folder} was run with another recipe ({shown}): resume with the same recipe"
                          " and --set, or start a new study with another --output")


def _read_finished(run: StudyRun) -> tuple[dict[str, Any] | None, bool]:
    """The finished run's metrics (None if unfinished) and whether its folder exists (then it resumes)."""
    check_same_recipe(run)
    metrics = run.folder / "metrics.json"
    return (json.loads(metrics.read_text()) if metrics.is_file() else None), run.folder.is_dir()


def run_one(run: StudyRun, train: Callable[..., Any]) -> None:
    """Train and test one run (`train`: `autolr.run`), unless its folder already holds the finished run."""
    saved, started = main_reads(launcher_state(), lambda: _read_finished(run))
    if saved is not None:
        run.metrics = saved
    else:
        try:  # --resume only for a run that started before: a fresh run's log says nothing of resuming
            run.metrics = train(run.recipe, output=run.folder, resume=started).metrics
        except Diverged as e:  # one diverging run must not end the study; it is counted as such
            run.metrics, run.error = {}, str(e)
            _say(f"{run.arm} seed {run.seed} diverged: {e}")
    run.cost = main_reads(launcher_state(), lambda: read_cost(run.folder / "log.jsonl", run.metrics, run.recipe))


def read_cost(log_file: Path, metrics: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """What a run paid: wall seconds, training seconds and epochs actually trained (every AutoLR trial).

    An epoch row counts its trials (`trials`; one pass without AutoLR) and, with `trial_seconds`, its
    `seconds` are all its trials'; an older log's epoch row holds only the kept trial's seconds, so
    there the trials' own rows are summed.
    """
    log = fileio.read_jsonl(log_file)
    epochs = [r for r in log if r.get("kind") == "epoch"]
    trials = [r for r in log if r.get("kind") == "trial"]
    if trials and not all("trial_seconds" in r for r in epochs):
        seconds = sum(float(r.get("seconds", 0.0)) for r in trials)
    else:
        seconds = sum(float(r.get("seconds", 0.0)) for r in epochs)
    trained = sum(int(r.get("trials", 1)) for r in epochs)
    nominal = len(epochs) or recipe.train.epochs
    return {
        "wall_seconds": round(float(metrics["wall_time"]), 2) if metrics and "wall_time" in metrics else None,
        "train_seconds": round(seconds, 2),
        "epochs": nominal,
        "epochs_trained": trained,
        "trial_epochs_per_epoch": round(trained / nominal, 4) if nominal else None,
    }


def run_study(
    recipe: str | Path, arms: list[Arm], *, seeds: int, run: Callable[..., Any] | None = None, overrides: list[str] = (),
    output: str | Path | None = None, resume: bool = False, baseline: str | None = None,
) -> StudyResult:
    """Run (or resume) every arm x seed, then write study.csv, study.json, study.md and study.png.

    `run` trains one run (default `autolr.run`; tests pass a stand-in).
    """
    run = run or runner.run
    base = parse_baseline(baseline, arms)
    first = load_recipe(recipe, list(overrides))
    folder = main_reads(launcher_state(), lambda: study_folder(first, output, resume))
    runs = make_runs(recipe, arms, seeds, folder, overrides)
    if is_main_process():
        folder.mkdir(parents=True, exist_ok=True)
    if seeds == 1:
        _say("one seed: the study reports means only; no interval exists (use --seeds 3 or more)")
    result = StudyResult(folder, arms, base, seeds, "recall@1", runs)
    for i, one in enumerate(runs, 1):
        _say(f"study run {i}/{len(runs)}: {one.arm} seed {one.seed}")
        run_one(one, run)
        if is_main_process():
            write_csv(result)  # after every run: a killed study still shows what it has
    result.metric = main_metric(runs)
    result.summary = summarize(rows(result), [a.key for a in arms], base, result.metric)
    if is_main_process():
        write_outputs(result)
    return result


def main_metric(runs: list[StudyRun]) -> str:
    scored = [r.metrics for r in runs if r.metrics]
    return "accuracy" if scored and "recall@1" not in scored[0] and "accuracy" in scored[0] else "recall@1"


def metric_names(runs: list[StudyRun]) -> list[str]:
    """Every test metric the runs report (recall@K, map@r, accuracy...), in the runs' order."""
    names: dict[str, None] = {}
    for r in runs:
        for k, v in (r.metrics or {}).items():
            if k.startswith(("recall@", "map@", "accuracy", "top")) and isinstance(v, (int, float)):
                names[k] = None
    return list(names)


def rows(result: StudyResult) -> list[dict[str, Any]]:
    """One row per run (finished or diverged): arm values, seed, every test metric, the cost, the folder."""
    names = metric_names(result.runs)
    out = []
    for r in result.runs:
        if r.metrics is None:
            continue  # not run yet
        m = r.metrics
        out.append({
            "arm": r.arm, **r.values, "seed": r.seed, "status": "diverged" if r.error else "ok",
            **{k: m.get(k) for k in names}, **{k: r.cost.get(k) for k in ("epochs", *COST_KEYS)},
            "run": str(r.folder.relative_to(result.folder)),
        })
    return out


def write_csv(result: StudyResult) -> None:
    table = rows(result)
    if not table:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    fileio.write_text(result.folder / "study.csv", buffer.getvalue())


def write_outputs(result: StudyResult) -> None:
    """study.csv, study.json, study.md and study.png, each written atomically."""
    write_csv(result)
    fileio.write_json(result.folder / "study.json", {
        "arms": {a.key: a.values for a in result.arms}, "seeds": result.seeds, **result.summary,
    })
    fileio.write_text(result.folder / "study.md", markdown(result.summary, result.seeds))
    plot(result.summary, rows(result), result.folder / "study.png")
