"""`autolr compare`: test metrics of several runs side by side (compare.md, compare.csv) and, for
iterative-pruning runs, the score at every level of weights remaining."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolr import fileio
from autolr.errors import AutolrError
from autolr.report.plots import cycle_schedule, figure, remaining_axis, save_png
from autolr.report.runs import Run, md_table, metric_keys, read_run


@dataclass
class Table:
    """Cells are numbers (percent, seconds), text, or None for blank; Markdown shows 2 decimals, CSV 4."""

    title: str
    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def cells(self, digits: int = 2) -> list[list[str]]:
        return [["" if c is None else f"{c:.{digits}f}" if isinstance(c, float) else str(c) for c in row]
                for row in self.rows]

    def markdown(self) -> str:
        return f"## {self.title}\n\n{md_table(self.header, self.cells())}\n"

    def csv(self) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([self.header, *self.cells(4)])
        return buf.getvalue()


@dataclass
class Comparison:
    tables: list[Table]
    files: list[Path]


def write_comparison(run_dirs: list[str | Path], output: str | Path = ".") -> Comparison:
    """Test metrics of several runs side by side (the paper's Table 5) as compare.md and compare.csv.

    Runs with different metrics get blank cells; an unfinished run (no metrics.json) is listed as such.
    Iterative-pruning runs add `compare_cycles.csv` and `compare_cycles.png`: the score at every level of
    weights remaining, one line per LR schedule.
    """
    if not run_dirs:
        raise AutolrError("compare needs at least one run folder: autolr compare RUN_DIR [RUN_DIR ...]")
    runs = [read_run(d, started=False) for d in run_dirs]
    labels = _labels(runs)
    out = Path(output)
    tables = [_metrics_table(runs, labels)]
    files = [out / "compare.md", out / "compare.csv"]
    fileio.write_text(files[1], tables[0].csv())
    pruned = [(run, label) for run, label in zip(runs, labels, strict=True) if run.cycles]
    if pruned:
        tables.append(_cycles_table(pruned))
        fileio.write_text(out / "compare_cycles.csv", tables[1].csv())
        save_png(_compare_cycles_figure(pruned), out / "compare_cycles.png")
        files += [out / "compare_cycles.csv", out / "compare_cycles.png"]
    fileio.write_text(files[0], "\n".join(t.markdown() for t in tables))
    return Comparison(tables, files)


def _labels(runs: list[Run]) -> list[str]:
    """Each run's output.name where it is unique among these runs, else its folder's name."""
    names = [run.name for run in runs]
    return [run.name if names.count(run.name) == 1 else run.path.name for run in runs]


def _metrics_table(runs: list[Run], labels: list[str]) -> Table:
    keys = metric_keys([r.metrics for r in runs if r.metrics])
    table = Table("Test metrics (%)", ["run", "model", "schedule", "drop top", *keys, "wall time (s)"])
    for run, label in zip(runs, labels, strict=True):
        m = run.metrics or {}
        name = label if run.metrics else f"{label} (unfinished)"
        cells = [100 * m[k] if k in m else None for k in keys]
        table.rows.append([name, m.get("model") or run.setting("model.name"), run.schedule,
                           m.get("drop_top", run.setting("model.drop_top")), *cells,
                           float(m["wall_time"]) if "wall_time" in m else None])
    return table


def _cycles_table(pruned: list[tuple[Run, str]]) -> Table:
    levels = sorted({round(100 * c["remaining"], 1) for run, _ in pruned for c in run.cycles}, reverse=True)
    table = Table("Score (%) by weights remaining (%)", ["run", "schedule", "metric", *(f"{p:.1f}" for p in levels)])
    for run, label in pruned:
        score = {round(100 * c["remaining"], 1): 100 * c["score"] for c in run.cycles}
        table.rows.append([label, cycle_schedule(run), run.cycles[0].get("metric", "score"),
                           *(score.get(p) for p in levels)])
    return table


def _compare_cycles_figure(pruned: list[tuple[Run, str]]):
    schedules = [cycle_schedule(run) for run, _ in pruned]
    names = [s if schedules.count(s) == 1 else f"{s} ({label})" for s, (_, label) in zip(schedules, pruned, strict=True)]
    metric = pruned[0][0].cycles[0].get("metric", "score")
    fig, ax = figure(f"{metric} against weights remaining, one line per run", "weights remaining (%)",
                      f"{metric} (%)")
    percents = []
    for (run, _), name in zip(pruned, names, strict=True):
        xs = [100 * c["remaining"] for c in run.cycles]
        ax.plot(xs, [100 * c["score"] for c in run.cycles], marker="o", label=name)
        percents += xs
    remaining_axis(ax, percents)
    ax.legend(fontsize="small")
    return fig
