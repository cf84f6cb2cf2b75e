"""Every shipped recipe validates, and runs one short epoch on a tiny fake copy of its dataset.

Generated from the shipped-recipe registry: a new recipe is tested without touching this file (a new
dataset needs one line in FAKES). The runs swap in a tiny model (timm's test_resnet, random weights, 32 px) and
a fake archive in the official layout, and keep everything else: the schedule (AutoLR trials
included), the pruning depth, the transform preset, the dataset's evaluation protocol.
"""

from __future__ import annotations

import json

import pytest
from _fake_datasets import make_cars, make_cifar10, make_cub, make_inshop, make_sop

from autolr.cli import main
from autolr.recipe import load_recipe, shipped_recipes

RECIPES = sorted(shipped_recipes())
FAKES = {"cub200": make_cub, "cars196": make_cars, "sop": make_sop, "inshop": make_inshop, "cifar10": make_cifar10}
TINY = [
    "model.name=test_resnet", "model.pretrained=false", "data.image_size=32", "data.strict_counts=false",
    "data.workers=0", "data.batch_size=8", "train.epochs=1", "prune.epochs=1", "prune.max_depth=0", "prune.cycles=2", "eval.batch_size=64",
]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def test_there_are_recipes():
    assert {"quickstart", "resnet50_cub"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_validates_and_opens_with_its_command(name):
    assert main(["validate", name, "--no-data"]) == 0  # the data lives on the user's machine (data.root)
    first, second = shipped_recipes()[name].read_text().splitlines()[:2]
    assert first.startswith("# ") and f"run {name}" in first  # `autolr run NAME` or `accelerate launch ...`
    assert second.startswith("# ") and len(second) > 10  # the one-line description `autolr recipes` shows


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_names_a_timm_model(name):
    import timm

    assert timm.is_model(load_recipe(name).model.name)


def test_paper_recipes_differ_only_in_the_dataset():
    """The resnet50_* recipes are one setup on four datasets: they must not drift apart."""
    recipes = [load_recipe(n).model_dump() for n in RECIPES if n.startswith("resnet50_")]
    for r in recipes:
        r["data"].pop("name"), r["output"].pop("name")
    assert len(recipes) == 4 and all(r == recipes[0] for r in recipes)


PAPER = [n for n in RECIPES if n.startswith(("resnet50_", "table5_")) or n in ("search_cub", "silo_cub")]


@pytest.mark.parametrize("name", PAPER)
def test_paper_recipes_use_the_papers_torchvision_weights(name):
    """Plain "resnet50" is timm's a1_in1k (BCE-trained "ResNet strikes back"); the paper fine-tuned torchvision's."""
    import timm

    recipe = load_recipe(name)
    assert recipe.model.name == "resnet50.tv_in1k"
    assert timm.models.get_pretrained_cfg(recipe.model.name).hf_hub_id == "timm/resnet50.tv_in1k"


def test_the_cyclic_recipe_starts_at_lr_min_as_its_comment_says():
    from autolr.train.schedules import lr_factor

    t = load_recipe("table5_cyclic").train
    assert t.lr * lr_factor(t, epoch=0) == pytest.approx(t.lr_min)
    assert "starts at lr_min" in shipped_recipes()["table5_cyclic"].read_text()


def test_inception_recipe_runs_at_299_px():
    import timm

    from autolr.data.transforms import resolve_image_size

    recipe = load_recipe("inception_cub")
    assert resolve_image_size(recipe.data.image_size, timm.models.get_pretrained_cfg(recipe.model.name).to_dict()) == 299


@pytest.mark.filterwarnings("ignore:Recall@K")  # SOP's and In-shop's K sets are larger than a fake split
@pytest.mark.parametrize("name", [n for n in RECIPES if n != "quickstart"])  # other tests run quickstart
def test_recipe_runs_one_tiny_epoch(name, tmp_path):
    dataset = load_recipe(name).data.name
    fake = FAKES[dataset](tmp_path / "data", **_small(dataset))
    out = tmp_path / "run"
    overrides = [*TINY, f"data.root={json.dumps(str(fake.folder))}", f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    assert main(["run", name, "--output", str(out), *sets(*overrides)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    key = "accuracy" if dataset.startswith("cifar") else "recall@1"  # classification or retrieval
    assert metrics["dataset"] == dataset and metrics["epochs"] == 1 and 0 <= metrics[key] <= 1


def _small(dataset: str) -> dict:
    """A few 32x24 images per class: 2 training batches of 8."""
    if dataset == "inshop":
        return {"items": 4, "per_item": 4, "size": (32, 24)}
    return {"classes": 4, "per_class": 4, "size": (32, 24)}
