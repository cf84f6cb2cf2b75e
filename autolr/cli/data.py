"""`autolr data ...`: prepare a dataset once, or look at one. A thin skin over `autolr.data.prepare`.

Mounted by `autolr.cli` as a typer sub-app; torch and datasets load only inside the commands.
"""

from __future__ import annotations

from typing import Annotated, get_args

import typer

from autolr.errors import AutolrError

app = typer.Typer(name="data", help="Prepare and inspect retrieval datasets.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="cub200, cars196, sop, inshop, cifar10, cifar100 or imagefolder.")]
Root = Annotated[str, typer.Option("--root", help="The dataset's folder (or the folder it was extracted into).")]
HubId = Annotated[str, typer.Option(
    "--hub-id", help="A hub copy (cub200, cars196, cifar10, cifar100) instead of --root: a hub dataset id, or a"
    " local folder laid out as one (parquet files under data/, as `hf download --repo-type dataset` leaves them).")]
CacheDir = Annotated[str, typer.Option("--cache-dir", help="Where prepared copies live [~/.cache/autolr/datasets].")]


@app.command()
def prepare(
    name: Name,
    root: Root = "",
    hub_id: HubId = "",
    size: Annotated[int, typer.Option("--size", help="Shrink the shorter side to this many px; 0 keeps the originals.")] = 256,
    cache_dir: CacheDir = "",
    workers: Annotated[int, typer.Option("--workers", help="Processes that decode images; -1: min(8, CPUs).")] = -1,
    skip_corrupt: Annotated[bool, typer.Option("--skip-corrupt", help="Leave out unreadable images (counted).")] = False,
    strict_counts: Annotated[bool, typer.Option("--strict-counts/--no-strict-counts", help="Split sizes must match the benchmark's.")] = True,
) -> None:
    """Build a dataset once, decode-check every image, shrink it, save it where training finds it."""
    from autolr.data.prepare import prepare_dataset

    _logging()
    if size < 0:
        raise AutolrError(f"--size {size}: give a shorter side in pixels, or 0 to keep the originals")
    cfg = _config(name, root=root, hub_id=hub_id, cache_dir=cache_dir,
                  skip_corrupt=skip_corrupt, strict_counts=strict_counts)
    folder = prepare_dataset(cfg, size=size, workers=None if workers < 0 else workers)
    typer.echo(str(folder))


@app.command()
def info(
    name: Name,
    root: Root = "",
    hub_id: HubId = "",
    cache_dir: CacheDir = "",
    sample: Annotated[int, typer.Option("--sample", help="Images per split whose size is read.")] = 200,
) -> None:
    """Split sizes, class counts and image sizes (a prepared copy if there is one, else the source).

    Sizes that differ from the benchmark's are shown with a warning, not refused.
    """
    from rich.console import Console
    from rich.table import Table

    from autolr.data.prepare import dataset_info

    _logging()
    cfg = _config(name, root=root, hub_id=hub_id, cache_dir=cache_dir, strict_counts=False)
    source, rows = dataset_info(cfg, sample=sample)
    table = Table("split", "images", "classes", "images/class", "width", "height",
                  title=f"{name} ({source})", caption="min / median / max; sizes from a sample of each split")
    for r in rows:
        table.add_row(r["split"], f"{r['images']:,}", f"{r['classes']:,}", _range(r["per_class"]),
                      _range(r["width"]), _range(r["height"]))
    Console().print(table)


def _config(name: str, **values):
    """A DataConfig, its name checked here so the message lists the choices."""
    from autolr.recipe import DataConfig

    names = get_args(DataConfig.model_fields["name"].annotation)
    if name not in names:
        raise AutolrError(f"unknown dataset {name!r}: choose one of {', '.join(names)}")
    return DataConfig(name=name, **values)


def _range(stats) -> str:
    return "-" if stats is None else " / ".join(f"{v:,}" for v in stats)


def _logging() -> None:
    """Show autolr's info lines (which copy is read, what was skipped) on the console, on stderr like every
    log line: stdout is for what a command prints as its result."""
    import logging

    from rich.logging import RichHandler

    from autolr.console import console

    top, log = logging.getLogger("autolr"), logging.getLogger("autolr.data")
    if not (top.handlers or log.handlers):  # the main CLI may have set up logging already
        log.addHandler(RichHandler(console=console(), show_path=False, show_time=False))
        log.setLevel(logging.INFO)
