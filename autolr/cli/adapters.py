"""`autolr adapters list|show`: which adapter handles a model, and how it splits into blocks. Offline."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

app = typer.Typer(help="Backbone adapters: how timm models split into stem, blocks and head.", no_args_is_help=True)


@app.command("list")
def list_adapters() -> None:
    """Registered adapter families and the timm names they claim (others use the generic adapter)."""
    from rich.console import Console
    from rich.table import Table

    from autolr.adapters import adapters

    table = Table("family", "timm name patterns", "class")
    for patterns, cls in adapters():
        table.add_row(cls.family, " ".join(patterns), f"{cls.__module__}.{cls.__qualname__}")
    table.add_row("generic", "every other timm model", "autolr.adapters.generic.GenericAdapter")
    Console().print(table)


@app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="A timm model name, e.g. resnet50.")],
    prune: Annotated[int, typer.Option("--prune", help="Cut this many top blocks first.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Stem, each block (members, parameters, output shape) and head of MODEL, after --prune N."""
    info = describe(model, prune)
    if as_json:
        typer.echo(json.dumps({k: info[k] for k in ("model", "adapter", "stem", "blocks", "head", "num_features")}))
        return
    _print_table(info)


def describe(model_name: str, prune: int = 0) -> dict[str, Any]:
    """The block map of a (cut) timm model, with per-block parameter counts and output shapes."""
    import torch

    from autolr.adapters import get_adapter, load_plugins, split_parameters
    from autolr.adapters.surgery import input_size
    from autolr.recipe import ModelConfig
    from autolr.weights import create_timm_model

    load_plugins()  # a user's entry-point module may register the timm model itself
    net = create_timm_model(ModelConfig(name=model_name, pretrained=False))
    adapter = get_adapter(model_name)
    if prune:
        adapter.truncate(net, prune)
    bmap = adapter.block_map(net)
    parts = split_parameters(net, bmap)
    shapes = _block_shapes(net, bmap, torch.zeros(1, *input_size(net)))
    return {
        "model": model_name, "adapter": adapter.family, "stem": bmap.stem, "blocks": bmap.blocks, "head": bmap.head,
        "num_features": int(getattr(net, "head_hidden_size", None) or net.num_features),
        "params": [sum(p.numel() for _, p in block) for block in parts["blocks"]],
        "stem_params": sum(p.numel() for _, p in parts["stem"]), "head_params": sum(p.numel() for _, p in parts["head"]),
        "shapes": shapes, "input_size": list(input_size(net)),
    }


def _block_shapes(net, bmap, x) -> list[list[int] | None]:
    """Each block's output shape at the model's default input size (from hooks on its last member)."""
    import torch

    shapes: dict[int, list[int]] = {}
    handles = []
    for i, block in enumerate(bmap.blocks):
        module = net.get_submodule(block[-1])
        handles.append(module.register_forward_hook(lambda m, inp, out, i=i: shapes.__setitem__(i, list(out.shape)) if torch.is_tensor(out) else None))
    try:
        with torch.no_grad():
            net.eval().forward_features(x)
    finally:
        for h in handles:
            h.remove()
    return [shapes.get(i) for i in range(len(bmap.blocks))]


def _print_table(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{info['model']} ({info['adapter']} adapter, input {tuple(info['input_size'])})")
    for col in ("part", "members", "params", "output shape"):
        table.add_column(col, justify="right" if col == "params" else "left")
    table.add_row("stem", ", ".join(info["stem"]) or "-", f"{info['stem_params']:,}", "")
    for i, (block, n, shape) in enumerate(zip(info["blocks"], info["params"], info["shapes"], strict=True), 1):
        table.add_row(f"block {i}", ", ".join(block), f"{n:,}", str(tuple(shape)) if shape else "")
    table.add_row("head", ", ".join(info["head"]) or "-", f"{info['head_params']:,}", "")
    console = Console()
    console.print(table)
    console.print(f"{len(info['blocks'])} blocks, feature size {info['num_features']}")
