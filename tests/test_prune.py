"""Layer-wise pruning search (Algorithm 1): the decision rule, and real searches on a constructed case
whose best depth is known: the top two blocks of the starting weights are dead (constant output), so
any cut above them embeds every image alike, and only dropping both recovers the features below."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import autolr
from autolr.cli import main
from autolr.modes.depth_search import choose_depth


def test_choose_depth_stops_at_the_first_drop_and_costs_p_plus_2():
    scores = {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.65, 4: 0.90}
    calls = []

    def score(d):
        calls.append(d)
        return scores[d]

    assert choose_depth(score, max_depth=4) == 2
    assert calls == [0, 1, 2, 3]  # p = 2 pruned blocks: p + 2 trainings, depth 4 never trained
    assert choose_depth(scores.get, max_depth=4, max_drop=0.06) == 4  # 0.65 is within 0.06 of 0.70
    assert choose_depth(scores.get, max_depth=1) == 1
    assert choose_depth({0: 0.5, 1: 0.5}.get, max_depth=1) == 1  # an equal score is not a drop
    assert choose_depth({0: 0.5, 1: 0.4}.get, max_depth=1) == 0


def _colour_folder(root, train=8, test=3, per_class=6, size=16):
    """Each class one colour (plus noise): easy for any healthy block, impossible for constant features."""
    rng = np.random.default_rng(0)
    for split, classes in (("train", range(train)), ("test", range(train, train + test))):
        for c in classes:
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True)
            colour = rng.integers(0, 256, 3)
            for i in range(per_class):
                img = np.clip(colour + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def _dead_top_checkpoint(path):
    """test_resnet (4 blocks) whose blocks 3 and 4 output constants: block 3's residual sum is pushed
    far below zero before its ReLU, so it outputs 0 and block 4 sees only zeros."""
    import timm
    from safetensors.torch import save_file

    net = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    block = net.layer3[0]
    with torch.no_grad():
        for bn in (block.bn2, block.downsample[2]):
            bn.weight.zero_()
            bn.bias.fill_(-1e4)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def constructed(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    return _colour_folder(root / "data"), _dead_top_checkpoint(root / "dead_top.safetensors")


def _recipe(constructed, *extra):
    data, ckpt = constructed
    return autolr.load_recipe("quickstart", [
        "model.name=test_resnet", "model.pretrained=false", f"model.checkpoint={str(ckpt)!r}",
        "data.name='imagefolder'", f"data.root={str(data)!r}", "data.image_size=16", "data.workers=0",
        "data.batch_size=12", "eval.flip=false", "train.epochs=1", "train.lr=0.001", "autolr.max_trials=1",
        "prune.mode='search'", *extra,
    ])


def test_full_search_picks_the_constructed_depth_and_resumes_without_retraining(tmp_path, constructed):
    out = tmp_path / "run"
    result = autolr.run(_recipe(constructed), output=out)
    m = result.metrics
    scores = {c["drop_top"]: c["score"] for c in m["prune.candidates"]}
    assert m["prune.depth"] == 2 and m["drop_top"] == 2 and m["prune.trainings"] == 3
    assert scores[0] == scores[1]  # constant features: the same (chance) score, so the search goes on
    assert scores[2] > scores[1] + 0.2
    assert json.loads((out / "model.json").read_text())["drop_top"] == 2
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["drop_top"] for r in rows if r["kind"] == "prune_candidate"] == [0, 1, 2]
    for d in range(3):  # every candidate kept: its score and log, no checkpoint
        cand = out / "prune" / f"drop-{d}"
        assert json.loads((cand / "metrics.json").read_text())["split"] == "val"
        assert not list((cand / "checkpoints").glob("epoch-*.pt"))

    # interrupted during the final training: the candidates are read back, not trained again
    (out / "metrics.json").unlink()
    logs = {d: (out / "prune" / f"drop-{d}" / "log.jsonl").read_text() for d in range(3)}
    again = autolr.run(_recipe(constructed), output=out, resume=True)
    assert again.metrics["prune.depth"] == 2
    assert {d: (out / "prune" / f"drop-{d}" / "log.jsonl").read_text() for d in range(3)} == logs
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "prune_candidate" for r in rows) == 3  # not logged twice


def test_heads_estimator_picks_the_same_depth_in_one_training(tmp_path, constructed):
    result = autolr.run(_recipe(constructed, "prune.estimator='heads'", "prune.max_drop=0.0"), output=tmp_path / "run")
    m = result.metrics
    scores = {c["drop_top"]: c["score"] for c in m["prune.candidates"]}
    assert m["prune.depth"] == 2 and m["prune.trainings"] == 1 and sorted(scores) == [0, 1, 2]
    assert scores[0] == scores[1] and scores[2] > scores[1] + 0.2
    assert (tmp_path / "run" / "prune" / "heads" / "metrics.json").is_file()


def test_impossible_search_depth_is_a_clear_error(tmp_path, constructed, capsys):
    data, ckpt = constructed
    code = main(["run", "quickstart", "--output", str(tmp_path / "run"), "--set", "model.name=test_resnet",
                 "--set", "model.pretrained=false", "--set", "prune.mode='search'", "--set", "prune.max_depth=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "prune.max_depth = 3" in err and "deepest cut is 2" in err
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_a_selection_run_must_be_a_fixed_depth_training(tmp_path, constructed):
    with pytest.raises(autolr.AutolrError, match="selection run is one training at a fixed depth"):
        autolr.run(_recipe(constructed), output=tmp_path / "run", selection=True)
    assert not (tmp_path / "run").exists()
