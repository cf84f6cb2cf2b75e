"""`autolr eval`, `autolr cam` and `autolr sweep`: thin skins over `autolr.eval.saved`, `autolr.eval.cam` and
`autolr.experiments.sweep`, mounted on the main app by `register(app)`. torch loads only inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from autolr.errors import AutolrError

Device = Annotated[Optional[str], typer.Option("--device", help="cuda, cpu, cuda:1, ... (default: cuda if available, else cpu).")]  # noqa: UP045


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)
    app.command("embed")(embed)
    app.command("export")(export)
    app.command("cam")(cam)
    app.command("sweep")(sweep)


def eval_(
    model: Annotated[str, typer.Argument(help="A finished run folder, or a model.safetensors with model.json beside it.")],
    data: Annotated[Optional[str], typer.Option("--data", help="Another dataset, by its data.name (default: the run's own).")] = None,  # noqa: UP045
    root: Annotated[Optional[str], typer.Option("--root", help="That dataset's folder.")] = None,  # noqa: UP045
    hub_id: Annotated[Optional[str], typer.Option("--hub-id", help="A hub copy (cub200, cars196, cifar10, cifar100) instead of --root.")] = None,  # noqa: UP045
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Sum the horizontal flip's features (default: the run's eval.flip).")] = None,  # noqa: UP045
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per batch (default: the run's eval.batch_size).")] = None,  # noqa: UP045
    recall_at: Annotated[Optional[str], typer.Option("--recall-at", help="K values, e.g. 1,2,4 (default: the run's, or the dataset's K set).")] = None,  # noqa: UP045
    device: Device = None,
    strict_counts: Annotated[bool, typer.Option("--strict-counts/--no-strict-counts", help="Split sizes must match the benchmark's (off: use a partial copy, with a warning).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    retrievals: Annotated[Optional[int], typer.Option("--retrievals", min=1, help="Also draw N test queries and their top-K neighbours into RUN_DIR/report/retrievals-<dataset>.png.")] = None,  # noqa: UP045
) -> None:
    """Recall@K and MAP@R of a saved model: by default on its run's test split; also written to
    RUN_DIR/eval-<dataset>.json."""
    from autolr.eval.saved import evaluate_saved, print_eval

    _load_plugins()
    result = evaluate_saved(model, data=data, root=root, hub_id=hub_id, flip=flip, batch_size=batch_size,
                            recall_at=int_list(recall_at, "--recall-at") if recall_at else None, device=device,
                            strict_counts=None if strict_counts else False)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        print_eval(result)
    if retrievals:
        from autolr.report.retrievals import write_eval_grid

        typer.echo(str(write_eval_grid(model, retrievals, data=data, root=root, hub_id=hub_id, device=device,
                                       strict_counts=None if strict_counts else False)))


def embed(
    model: Annotated[str, typer.Argument(metavar="RUN", help="A finished run folder, or a model.safetensors with model.json beside it.")],
    images: Annotated[Optional[list[Path]], typer.Argument(metavar="[IMAGE_OR_FOLDER]...", help="Image files or folders (searched recursively) instead of a dataset.", show_default=False)] = None,  # noqa: UP045
    output: Annotated[Path, typer.Option("--output", "-o", help="The .safetensors file to write; its .json side file goes beside it.")] = ...,
    data: Annotated[Optional[str], typer.Option("--data", help="A dataset by its data.name (default: the run's own).")] = None,  # noqa: UP045
    root: Annotated[Optional[str], typer.Option("--root", help="That dataset's folder.")] = None,  # noqa: UP045
    hub_id: Annotated[Optional[str], typer.Option("--hub-id", help="A hub copy instead of --root.")] = None,  # noqa: UP045
    split: Annotated[str, typer.Option("--split", help="test (the evaluation split: In-shop's query and gallery), train, query or gallery.")] = "test",
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Sum the horizontal flip's features (default: the run's eval.flip).")] = None,  # noqa: UP045
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per batch (default: the run's eval.batch_size).")] = None,  # noqa: UP045
    device: Device = None,
) -> None:
    """L2-normalised embeddings of a dataset split or of image files, with labels and image paths, as
    safetensors + a JSON side file (for a vector index)."""
    from autolr.eval.embed import embed_saved, write_embeddings

    emb = embed_saved(model, [str(p) for p in images or []], data=data, root=root, hub_id=hub_id, split=split,
                      flip=flip, batch_size=batch_size, device=device)
    for path in write_embeddings(emb, output):
        typer.echo(str(path))


def export(
    run_dir: Annotated[str, typer.Argument(metavar="RUN", help="A finished run folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write (config.json, model.safetensors, README.md).")] = ...,
    push: Annotated[Optional[str], typer.Option("--push", help="Then upload the folder to this Hugging Face hub repo (created if missing).")] = None,  # noqa: UP045
    private: Annotated[bool, typer.Option("--private", help="With --push: create the repo private.")] = False,
) -> None:
    """The fine-tuned backbone as a timm folder: timm.create_model("local-dir:DIR", pretrained=True) loads it."""
    from autolr.export import export_run

    result = export_run(run_dir, output, push=push, private=private)
    typer.echo(str(result.folder))
    if result.url:
        typer.echo(result.url)


def cam(
    run_dir: Annotated[str, typer.Argument(help="A finished run folder (or its model.safetensors).")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    blocks: Annotated[Optional[str], typer.Option("--blocks", help="Kept blocks, 1-based, e.g. 1,8,16 (default: 4 spread up to the last).")] = None,  # noqa: UP045
    target: Annotated[str, typer.Option("--target", help="class: the head's top logit; embedding: the embedding's norm.")] = "class",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for the PNGs (default: RUN_DIR/cam).")] = None,  # noqa: UP045
    device: Device = None,
) -> None:
    """Grad-CAM of the fine-tuned model at chosen blocks: one PNG per image, the input and one overlay per block."""
    from autolr.eval.cam import cam_images

    _load_plugins()
    written = cam_images(run_dir, images, blocks=int_list(blocks, "--blocks") if blocks else None,
                         target=target, output=output, device=device)
    for path in written:
        typer.echo(str(path))


def sweep(
    recipe: Annotated[str, typer.Argument(help="A recipe file, or the name of a shipped recipe.")],
    grid: Annotated[list[str], typer.Option("--grid", "-g", help="section.key=v1,v2,... (once or twice; twice draws the heatmap).")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a recipe key in every cell (repeatable).")] = None,  # noqa: UP045
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The sweep folder (default: output.dir/<recipe>-sweep-<time>).")] = None,  # noqa: UP045
    resume: Annotated[bool, typer.Option("--resume", help="Continue the sweep in --output (or the newest of this recipe).")] = False,
    final: Annotated[bool, typer.Option("--final", help="Then train the chosen cell on all training classes; report its test split.")] = False,
    metric: Annotated[str, typer.Option("--metric", help="The validation score to choose by (default: recall@1, or accuracy).")] = "auto",
) -> None:
    """Run a recipe over a grid, choose the best cell on the validation split; tables and the alpha/beta heatmap."""
    from autolr.experiments.sweep import parse_grid, print_sweep, run_sweep

    _load_plugins()
    result = run_sweep(recipe, [parse_grid(g) for g in grid], overrides=set_ or [], output=output, resume=resume,
                       final=final, metric=metric)
    print_sweep(result)


def _load_plugins() -> None:
    """A saved model or recipe may name a user's backbone: load entry points before its name is resolved."""
    from autolr.adapters import load_plugins

    load_plugins()


def int_list(text: str, option: str) -> list[int]:
    """`1,2,4` -> [1, 2, 4]: positive integers, or an error naming the option."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise AutolrError(f"{option} {text!r}: give positive integers separated by commas, e.g. {option} 1,2,4")
    return values

