"""`autolr study`: a thin skin over `autolr.experiments.study`, mounted on the main app by `register(app)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("study")(study)


def study(
    recipe: Annotated[str, typer.Argument(help="A recipe file, or the name of a shipped recipe.")],
    arm: Annotated[list[str], typer.Option("--arm", "-a", help="section.key=v1,v2,... (repeatable: every combination is an arm).")],
    seeds: Annotated[int, typer.Option("--seeds", "-n", help="Runs per arm, train.seed = 0..N-1 (3 or more for useful intervals).")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a recipe key in every run (repeatable).")] = None,  # noqa: UP045
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The study folder (default: output.dir/<recipe>-study-<time>).")] = None,  # noqa: UP045
    resume: Annotated[bool, typer.Option("--resume", help="Continue the study in --output (or the newest of this recipe); finished runs are read back.")] = False,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="KEY=V the other arms are paired against (default: the first value of the first --arm).")] = None,  # noqa: UP045
) -> None:
    """Every arm x seed as a full run on the test split: means, 95% intervals, paired differences, cost."""
    from autolr.experiments.study import parse_arm, run_study
    from autolr.report.study import print_study

    result = run_study(recipe, [parse_arm(a) for a in arm], seeds=seeds, overrides=set_ or [],
                       output=output, resume=resume, baseline=baseline)
    print_study(result.summary, result.folder, result.seeds)
