"""The `autolr` command: a thin skin over the library (`autolr.run`, `autolr.load_recipe`).

Start-up stays fast: torch, timm, accelerate and datasets are imported only inside the commands that
need them. User errors print one red line and exit with code 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from autolr.errors import AutolrError

app = typer.Typer(
    name="autolr",
    help="Fine-tune timm backbones for retrieval with layer-wise pruning and automatic per-block LRs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _mount_subcommands() -> None:
    from autolr.cli.adapters import app as adapters_app
    from autolr.cli.data import app as data_app
    from autolr.cli.report import register as register_report
    from autolr.cli.study import register as register_study
    from autolr.cli.tools import register as register_tools

    app.add_typer(adapters_app, name="adapters")
    app.add_typer(data_app, name="data")
    register_report(app)
    register_tools(app)
    register_study(app)


SetOption = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer needs Optional on 3.10
    typer.Option("--set", "-s", help="Override a recipe key, TOML syntax: --set train.epochs=5 (repeatable)."),
]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


@app.command()
def run(
    recipe: Annotated[str, typer.Argument(help="A recipe file, or the name of a shipped recipe.")],
    set_: SetOption = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The run folder itself.")] = None,  # noqa: UP045
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output (or the newest run of this recipe).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --output folder.")] = False,
) -> None:
    """Fine-tune and evaluate as the recipe says; leaves a run folder with metrics and the model."""
    from autolr.adapters import load_plugins
    from autolr.recipe import load_recipe
    from autolr.runner import run as run_recipe

    load_plugins()  # in every process a launcher starts: a user's backbone is a timm name from here on
    result = run_recipe(load_recipe(recipe, set_ or ()), output=output, resume=resume, overwrite=overwrite)
    if os.environ.get("RANK", "0") == "0":  # under a launcher, one process prints the folder
        typer.echo(str(result.run_dir))


@app.command()
def validate(
    recipes: Annotated[list[str], typer.Argument(help="Recipe files or shipped recipe names.")],
    set_: SetOption = None,
    data: Annotated[bool, typer.Option("--data/--no-data", help="Also check that the dataset is present (off: a recipe for another machine).")] = True,
) -> None:
    """Check recipes without running them: keys, types, values, and every check `autolr run` makes before
    training (model name, adapters, drop_top and max_depth ranges, the data); loads no weights or images."""
    from autolr.preflight import check
    from autolr.recipe import load_recipe

    for recipe in recipes:
        check(load_recipe(recipe, set_ or ()), data=data)
        typer.echo(f"{recipe}: ok")


@app.command("recipes")
def list_recipes() -> None:
    """The recipes that ship with autolr, with a one-line description each."""
    from rich.console import Console
    from rich.table import Table

    from autolr.recipe import shipped_recipes

    table = Table("name", "description")
    for name, path in sorted(shipped_recipes().items()):
        table.add_row(name, _description(path))
    Console().print(table)


def _description(path: Path) -> str:
    """A shipped recipe's first comment line that is not the command that runs it."""
    for line in path.read_text().splitlines():
        text = line.lstrip("# ").strip()
        if line.startswith("#") and text and not text.startswith(("autolr ", "accelerate ")):
            return text
    return ""


_mount_subcommands()  # after the commands above: `autolr --help` lists run, validate and recipes first


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (callable from tests: `main(["validate", ...])`)."""
    try:
        # not standalone: typer returns (not raises) the exit code of a typer.Exit and 130 for Ctrl-C
        rc = app(args=argv if argv is not None else sys.argv[1:], prog_name="autolr", standalone_mode=False)
    except KeyboardInterrupt:
        rc = 130
    except AutolrError as e:
        if _state["debug"]:
            raise
        from rich.console import Console
        from rich.markup import escape

        # escape: messages name recipe sections like [data], which rich would read as markup
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return 130
    except Exception as e:
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # click's usage errors (typer may vendor click)
            e.show()
            return e.exit_code
        raise
    if rc == 130:
        print("interrupted", file=sys.stderr)
    return rc if isinstance(rc, int) else 0
