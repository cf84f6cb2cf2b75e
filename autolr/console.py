"""What a run shows a person: rich logging on the main process (and `run.log`), the epoch line, the
progress bar and the metrics table. Only rich and the standard library: every layer may use it."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("autolr")


def log_epoch(row: dict[str, Any], epochs: int, task: str = "retrieval") -> None:
    extra = f", {row['trials']} trial(s)" if "trials" in row else ""
    key = "accuracy" if task == "classification" else "recall@1"
    test = f", test {key} {row['test'][key]:.4f}" if "test" in row else ""
    log.info("epoch %d/%d: loss %.4f, %.0f img/s, %.1f s%s%s", row["epoch"], epochs, row["loss"],
             row["images_per_s"], row["seconds"], extra, test)


class ProgressBar:
    """A rich progress bar (where `enabled`: the main process); `bar(step, text)` advances it."""

    def __init__(self, enabled: bool, title: str, total: int):
        self.enabled, self.title, self.total = enabled, title, total

    def __enter__(self):
        if not self.enabled:
            return lambda step, text: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), transient=True, console=console(),
            # no refresh thread: it competes with the step loop for the GIL; `_update` redraws at most
            # twice a second from the loop itself
            redirect_stdout=False, auto_refresh=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.title, total=self.total, info="")
        self.drawn = 0.0
        return self._update

    def _update(self, step: int, text: str | None) -> None:
        fields = {"info": text} if text is not None else {}
        self.progress.update(self.task, completed=step, **fields)
        now = time.monotonic()
        if now - self.drawn >= 0.5 or step == self.total:
            self.drawn = now
            self.progress.refresh()

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()
        return False


def print_metrics(metrics: dict[str, Any]) -> None:
    """The Recall@K table: before fine-tuning, after, and the gain."""
    from rich.table import Table

    table = Table(title=f"{metrics['model']} on {metrics['dataset']} ({metrics.get('split', 'test')} split)")
    for col in ("metric", "before", "after", "gain"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key, after in metrics.items():
        if key.startswith(("recall@", "map@", "accuracy")):
            before = metrics["initial"].get(key, math.nan)
            table.add_row(key, f"{100 * before:.2f}", f"{100 * after:.2f}", f"{100 * (after - before):+.2f}")
    console().print(table)
    console().print(f"wall time {metrics['wall_time']:.0f} s")


def console():
    from rich.console import Console

    return Console(stderr=True)


def setup_logging(run_dir: Path | None, main: bool) -> None:
    """Rich console logging on the main process, and a plain `run.log` in the run folder."""
    from rich.logging import RichHandler

    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, "_autolr", False):
            log.removeHandler(h)
            h.close()
    if not main:
        return
    handlers = [RichHandler(console=console(), show_path=False, show_time=False)]
    if run_dir is not None:
        handlers.append(logging.FileHandler(run_dir / "run.log"))
        handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for h in handlers:
        h._autolr = True
        log.addHandler(h)


def say(text: str) -> None:
    """A progress line on stderr outside a run (a sweep's or study's), where the run's logger is not set
    up; printed as is (no rich markup)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(escape(text), highlight=False)
