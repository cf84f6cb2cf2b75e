"""`autolr report` and `autolr compare`: a thin skin over `autolr.report.summary` and `autolr.report.compare`.

Registered on the main app by `autolr.cli`; matplotlib loads only inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RunDir = Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder (the one `autolr run` printed).")]


def report_cmd(run_dir: RunDir) -> None:
    """Draw a run's plots and write its summary.md into RUN_DIR/report/; prints the files written."""
    from autolr.report.summary import write_report

    for path in write_report(run_dir):
        typer.echo(str(path.resolve()))


def compare_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", help="Run folders to compare.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where compare.md and compare.csv go.")] = Path("."),
) -> None:
    """Test metrics of several runs side by side (Recall@K, MAP@R, wall time); writes compare.md and .csv."""
    from rich.console import Console
    from rich.table import Table

    from autolr.report.compare import write_comparison

    result = write_comparison(run_dirs, output)
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would squeeze the table into 80 columns
        console.width = 200
    for t in result.tables:
        table = Table(*t.header, title=t.title)
        for row in t.cells():
            table.add_row(*row)
        console.print(table)
    for path in result.files:
        typer.echo(str(path.resolve()))


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
    app.command("compare")(compare_cmd)
