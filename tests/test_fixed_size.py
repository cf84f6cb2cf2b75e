"""A model with a fixed input size (ViT) at another data.image_size: built for that size, end to end."""

import io
import json
from contextlib import redirect_stdout

import pytest
from _fake_datasets import make_cub

from autolr.cli import main
from autolr.model import load_model


def test_a_vit_runs_evaluates_and_reloads_at_32_px(tmp_path):
    root = make_cub(tmp_path / "data", classes=4, per_class=4, size=(32, 24)).folder
    out = tmp_path / "run"
    sets = [
        "model.name=test_vit", "data.name=cub200", f"data.root={json.dumps(str(root))}", "data.image_size=32",
        "data.strict_counts=false", "data.workers=0", "data.batch_size=8", "train.epochs=1",
        "train.schedule='constant'", "eval.recall_at=[1,2]", f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
    ]
    assert main(["run", "quickstart", "--output", str(out), *[a for s in sets for a in ("--set", s)]]) == 0
    assert load_model(out).backbone.pos_embed.shape[1] == 1 + 2 * 2  # 16 px patches on a 32 px image
    with redirect_stdout(io.StringIO()) as printed:
        assert main(["eval", str(out), "--json", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(printed.getvalue())["recall@1"] == pytest.approx(metrics["recall@1"], abs=1e-4)
