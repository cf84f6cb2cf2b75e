"""`autolr export`: a timm folder (save_for_hf) that `timm.create_model("local-dir:DIR", pretrained=True)`
loads as the run's fine-tuned backbone, cut ones included where the adapter states the cut; `--push`."""

import io
import json
from contextlib import redirect_stdout

import pytest
import timm
import torch
from _fake_datasets import make_imagefolder
from autolr.adapters import get_adapter

import autolr
from autolr.cli import main
from autolr.export import export_run
from autolr.model import RetrievalNet, create_backbone, save_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread per module


def saved_run(path, name, drop_top, size=32):
    """A finished run folder as `autolr run` leaves it (model, recipe, metrics), without the training."""
    recipe = autolr.load_recipe("quickstart", [f"model.name={name!r}", f"model.drop_top={drop_top}",
                                               f"data.image_size={size}"])
    torch.manual_seed(0)
    path.mkdir(parents=True)
    save_model(RetrievalNet(create_backbone(recipe.model), 5), recipe.model, path)
    (path / "recipe.toml").write_text(recipe.to_toml())
    metrics = {"recall@1": 0.8, "map@r": 0.3, "initial": {"recall@1": 0.6, "map@r": 0.2}, "dataset": "digits"}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def pooled(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_a_trained_resnet_with_a_dropped_block_loads_in_timm_with_the_same_features(tmp_path):
    data = make_imagefolder(tmp_path, per_class=4).folder
    recipe = autolr.load_recipe("quickstart", [
        "model.name='resnet18'", "model.drop_top=1", "data.name='imagefolder'", f"data.root={str(data)!r}",
        "data.image_size=16", "data.workers=0", "data.batch_size=8", "train.epochs=1", "train.schedule='constant'"])
    run = autolr.run(recipe, output=tmp_path / "run").run_dir
    with redirect_stdout(io.StringIO()) as out:
        assert main(["export", str(run), "--output", str(tmp_path / "timm")]) == 0
    assert str(tmp_path / "timm") in out.getvalue()
    model = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True)
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(pooled(model, x), pooled(autolr.load_model(run).backbone, x))
    assert len(model.layer4) == 1 and tuple(model.pretrained_cfg["input_size"]) == (3, 16, 16)
    card = (tmp_path / "timm" / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"| recall@1 | {100 * metrics['initial']['recall@1']:.2f} | {100 * metrics['recall@1']:.2f} |" in card
    assert "drop_top = 1" in card and "[model]" in card and "library_name: timm" in card


@pytest.mark.parametrize("name,drop,args,size", [("test_vit", 2, {"depth": 4}, 160), ("resnet18", 0, {}, 32)])
def test_vit_depth_and_an_uncut_model_export(tmp_path, name, drop, args, size):
    run = saved_run(tmp_path / "run", name, drop, size)
    assert export_run(run, tmp_path / "out").model_args == args
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True)
    x = torch.randn(2, 3, size, size)
    assert torch.equal(pooled(model, x), pooled(autolr.load_model(run).backbone, x))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architecture"] == name and all(config["model_args"][k] == v for k, v in args.items())


def test_adapters_state_their_cut_as_timm_arguments():
    for name, drop, args in [("resnet50", 2, {"layers": [3, 4, 6, 1]}), ("test_vit", 1, {"depth": 5})]:
        model = timm.create_model(name, pretrained=False, num_classes=0)
        get_adapter(name).truncate(model, drop)
        assert get_adapter(name).timm_args(model) == args
    assert get_adapter("efficientnet_b0").timm_args(timm.create_model("efficientnet_b0", num_classes=0)) is None


def test_cuts_timm_cannot_rebuild_are_refused_naming_load_model(tmp_path, capsys):
    run = saved_run(tmp_path / "stage", "resnet18", 2)  # layer4 gone whole: timm's ResNet would say 512 features
    assert main(["export", str(run), "--output", str(tmp_path / "out")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "num_features = 512" in err and "autolr.load_model(RUN)" in err
    assert not (tmp_path / "out").exists()
    run = saved_run(tmp_path / "eff", "efficientnet_b0", 1)
    with pytest.raises(autolr.AutolrError, match=r"efficientnet_b0 with model.drop_top = 1: .*autolr.load_model\(RUN\)"):
        export_run(run, tmp_path / "out")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(autolr.AutolrError, match="other files in it"):
        export_run(saved_run(tmp_path / "ok", "resnet18", 0), tmp_path / "busy")


def test_push_uploads_the_checked_folder_with_its_card(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = {}

    class Repo:
        repo_id = "me/digits-resnet18"

    class Commit:
        commit_url = "https://huggingface.co/me/digits-resnet18/commit/abc"

    def upload_folder(self, **kwargs):  # only the network is replaced: what would go up is checked here
        calls.update(kwargs, files=sorted(p.name for p in kwargs["folder_path"].iterdir()))
        return Commit()

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("created", repo_id) and Repo())
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    run = saved_run(tmp_path / "run", "resnet18", 1)
    with redirect_stdout(io.StringIO()) as out:
        assert main(["export", str(run), "--output", str(tmp_path / "out"), "--push", "me/digits-resnet18"]) == 0
    assert Commit.commit_url in out.getvalue() and calls["created"] == "me/digits-resnet18"
    assert calls["repo_id"] == "me/digits-resnet18" and calls["files"] == ["README.md", "config.json", "model.safetensors"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert 'timm.create_model("hf-hub:me/digits-resnet18", pretrained=True)' in card
    assert "| recall@1 | 60.00 | 80.00 |" in card and "`layers=[2, 2, 2, 1]`" in card

    def offline(self, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(HfApi, "upload_folder", offline)
    with pytest.raises(autolr.AutolrError, match=r"--push me/x: the upload failed \(ConnectionError: no network\)"):
        export_run(run, tmp_path / "out", push="me/x")
