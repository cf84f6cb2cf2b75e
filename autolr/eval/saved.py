"""`autolr eval`: score a saved model on any supported dataset, outside the run that trained it.

The scoring replicates the training loop's `evaluate` (same loaders, test transform, flip sum and metrics) on one
process, so evaluating a run folder on its own test split reproduces its `metrics.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autolr.errors import AutolrError
from autolr.recipe import Recipe


@dataclass
class SavedModel:
    """A fine-tuned network and what it was trained with (the recipe, when a run folder holds one)."""

    net: Any  # RetrievalNet
    model_name: str  # the timm name in model.json
    recipe: Recipe
    run_dir: Path | None  # set when a run folder was given (eval results are written there)


def load_saved(path: str | Path) -> SavedModel:
    """A run folder, or a `model.safetensors` with `model.json` (and maybe `recipe.toml`) beside it."""
    from autolr.model import load_model
    from autolr.recipe import load_recipe, parse_recipe

    path = Path(path)
    if not path.exists():
        raise AutolrError(f"{path} not found: give a finished run folder or its model.safetensors")
    if path.is_file() and path.name != "model.safetensors":
        raise AutolrError(f"{path} is not a model.safetensors file: give a finished run folder or its model.safetensors")
    folder = path if path.is_dir() else path.parent
    net = load_model(folder)
    recipe_file = folder / "recipe.toml"
    # without the recipe the model's own defaults apply (image size "auto", digits), and --data names the data
    recipe = load_recipe(recipe_file) if recipe_file.is_file() else parse_recipe({}, source=str(path))
    name = json.loads((folder / "model.json").read_text())["timm_name"]
    return SavedModel(net, name, recipe, folder if path.is_dir() else None)


def pick_device(name: str | None = None) -> torch.device:
    """`name` (cuda, cpu, cuda:1, mps ...), or cuda when available, else cpu."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise AutolrError(f"--device {name}: not usable here ({str(e).splitlines()[0]}); try --device cpu") from None
    return device


def eval_transform(net, recipe: Recipe):
    """The run's test transform and image size (the model's normalisation, the recipe's size)."""
    from autolr.data.transforms import build_transforms

    _, test_tf, size = build_transforms(recipe.data, net.backbone.pretrained_cfg)
    return test_tf, size


@torch.no_grad()
def embed(net, loader, device: torch.device, flip: bool, *, title: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised embeddings (the flip summed in when `flip`) and labels, in dataset order; a
    progress bar when `title` is given and stderr is a terminal."""
    feats, labels = [], []
    with _progress(title, len(loader)) as advance:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            f = net.embed(x).float()
            if flip:
                f = f + net.embed(torch.flip(x, dims=[3])).float()
            feats.append(f)
            labels.append(torch.as_tensor(y).to(device))
            advance()
    return torch.cat(feats), torch.cat(labels)


class _progress:
    """A rich progress bar on stderr (nothing when stderr is not a terminal or there is no title)."""

    def __init__(self, title: str, total: int):
        self.title, self.total, self.bar = title, total, None

    def __enter__(self):
        from rich.console import Console

        console = Console(stderr=True)
        if self.title and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=console, transient=True)
            self.bar.start()
            task = self.bar.add_task(self.title, total=self.total)
            return lambda: self.bar.advance(task)
        return lambda: None

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def evaluate_model(
    net, data, test_tf, *, recall_at: list[int], device: torch.device, flip: bool = True,
    batch_size: int = 128, workers: int = 0, seed: int = 0,
) -> dict[str, float]:
    """Recall@K and MAP@R of `net` on a DataBundle's evaluation split(s): all-vs-all or query vs gallery;
    for a classification dataset (CIFAR), the head's top-1 and top-5 accuracy on its test split."""
    from autolr.data.loader import make_loader
    from autolr.eval.metrics import recall_and_map

    net = net.to(device).eval()
    if getattr(data, "task", "retrieval") == "classification":
        loader = make_loader(data.test, test_tf, batch_size=batch_size, workers=workers, seed=seed, train=False,
                             pin_memory=device.type == "cuda")
        return accuracy(net, loader, device, data.num_classes)
    out = {
        name: embed(net, make_loader(split, test_tf, batch_size=batch_size, workers=workers, seed=seed, train=False,
                                     pin_memory=device.type == "cuda"), device, flip)
        for name, split in data.eval_splits().items()
    }
    (q, ql), (g, gl) = out.get("test", out.get("query")), out.get("gallery", (None, None))
    recalls, mapr = recall_and_map(q, ql, recall_at, g, gl)
    return {**{f"recall@{k}": round(v, 6) for k, v in recalls.items()}, "map@r": round(mapr, 6)}


@torch.no_grad()
def predict(net, loader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training head's logits and the labels, in dataset order."""
    logits, labels = [], []
    for x, y in loader:
        logits.append(net(x.to(device, non_blocking=True)).float())
        labels.append(y.to(device))
    return torch.cat(logits), torch.cat(labels)


def accuracy(net, loader, device: torch.device, num_classes: int) -> dict[str, float]:
    """Top-1 and top-5 accuracy of the training head (its classes must be the dataset's)."""
    from autolr.eval.metrics import top_k_accuracy

    out = net.head[-1].out_features
    if out != num_classes:
        raise AutolrError(f"the model's head has {out} classes and this dataset {num_classes}: accuracy needs"
                          " the dataset it was trained on (or a retrieval dataset, scored by Recall@K)")
    return top_k_accuracy(*predict(net, loader, device))


def eval_data_recipe(recipe: Recipe, name: str | None, root: str | None, hub_id: str | None,
                     strict_counts: bool | None = None) -> Recipe:
    """The run's recipe with another dataset: a new name drops the run's root and hub id (they point at
    the run's dataset); validated by the recipe schema, so a bad name is a recipe error."""
    from autolr.recipe import parse_recipe

    data = recipe.data.model_dump()
    if name and name != data["name"]:
        data.update(name=name, root="", hub_id="")
    data.update({k: v for k, v in (("root", root), ("hub_id", hub_id), ("strict_counts", strict_counts)) if v is not None})
    return parse_recipe({**recipe.model_dump(), "data": data}, source="autolr eval")


def evaluate_saved(
    path: str | Path, *, data: str | None = None, root: str | None = None, hub_id: str | None = None,
    flip: bool | None = None, batch_size: int | None = None, recall_at: list[int] | None = None,
    device: str | None = None, strict_counts: bool | None = None,
) -> dict[str, Any]:
    """Evaluate a saved model; by default on its run's test split with its run's flip and K set.

    The result is also written to `RUN_DIR/eval-<dataset>.json` when `path` is a run folder.
    """
    from autolr.data import load_data
    from autolr.data.transforms import test_resize
    from autolr.fileio import write_json

    dev = pick_device(device)  # first: a wrong device fails before anything loads
    saved = load_saved(path)
    own = saved.recipe
    recipe = eval_data_recipe(own, data, root, hub_id, strict_counts)
    test_tf, size = eval_transform(saved.net, recipe)
    bundle = load_data(recipe.data, seed=recipe.train.seed, min_side=test_resize(size))
    classification = getattr(bundle, "task", "retrieval") == "classification"
    if classification and recall_at is not None:
        raise AutolrError(f"--recall-at: {bundle.name} is scored by classification accuracy, not Recall@K: drop it")
    if recall_at is None:  # the run's explicit K set on its own dataset, else the dataset's standard one
        same = recipe.data.name == own.data.name and own.eval.recall_at != "auto"
        recall_at = list(own.eval.recall_at) if same else bundle.recall_at
    flip = own.eval.flip if flip is None else flip
    metrics = evaluate_model(
        saved.net, bundle, test_tf, recall_at=recall_at, device=dev, flip=flip,
        batch_size=batch_size or own.eval.batch_size, workers=recipe.data.workers, seed=recipe.train.seed,
    )
    splits = bundle.eval_splits()
    result = {
        **metrics, "dataset": bundle.name, "split": "query/gallery" if "query" in splits else "test",
        "images": sum(len(s) for s in splits.values()), "source": bundle.source or "built in",
        "model": saved.model_name, "image_size": size, "device": str(dev),
        **({} if classification else {"flip": flip, "recall_at": recall_at}),
    }
    if saved.run_dir is not None:  # a no-flip score does not replace the flip one
        write_json(saved.run_dir / f"eval-{bundle.name}{'' if classification or flip else '-noflip'}.json", result)
    return result


def print_eval(result: dict[str, Any]) -> None:
    """One table: each metric in percent."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']} on {result['dataset']}",
                  caption=f"{result['split']} split, {result['images']} images, {result['image_size']} px"
                          + (f", flip {'on' if result['flip'] else 'off'}" if "flip" in result else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key.startswith(("recall@", "map@", "accuracy")):
            table.add_row(key, f"{100 * value:.2f}")
    Console().print(table)
