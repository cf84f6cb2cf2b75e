"""Fine-tuning at a fixed depth (the recipe's model.drop_top): one training, then the run's report.

The training itself is the loop's `train_and_evaluate`; AutoLR runs inside it as the epoch when
train.schedule = "autolr" (`autolr.train.autolr`), every other schedule as a plain pass.
"""

from __future__ import annotations

from typing import Any

from autolr.recipe import Recipe
from autolr.report.summary import write_report
from autolr.rundir import RunDir
from autolr.train.loop import train_and_evaluate


def finetune(recipe: Recipe, accelerator, rundir: RunDir, *, selection: bool = False,
             extra_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and score in the open run folder; a test-split run also writes its plots and summary.md."""
    metrics = train_and_evaluate(recipe, accelerator, rundir, selection=selection, extra_metrics=extra_metrics)
    if accelerator.is_main_process and not selection:
        write_report(rundir.path)  # plots and summary.md; a plot that fails is only a warning
    return metrics
