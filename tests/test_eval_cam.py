"""`autolr eval` reproduces a run's own metrics and evaluates elsewhere; `autolr cam` draws Grad-CAM maps."""

import io
import json
from contextlib import redirect_stdout

import pytest
import timm
import torch
from PIL import Image

import autolr
from autolr.cli import main
from autolr.eval.cam import default_blocks, grad_cam
from autolr.model import RetrievalNet

TINY = [  # a name with its pretrained tag, as the paper recipes give theirs (resnet50.tv_in1k)
    "model.name=test_resnet.r160_in1k", "data.image_size=16", "data.workers=0", "data.batch_size=64", "eval.batch_size=512",
    "train.epochs=1", "train.schedule='constant'", "train.lr=0.01", "eval.recall_at=[1,2]",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread per module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run (flip on, as by default), trained once for every test here."""
    out = tmp_path_factory.mktemp("evalcam") / "run"
    return autolr.run(autolr.load_recipe("quickstart", TINY), output=out).run_dir


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / "grey.png", folder / "colour.jpg"]
    Image.fromarray((torch.rand(24, 20) * 255).byte().numpy()).save(paths[0])
    Image.fromarray((torch.rand(30, 40, 3) * 255).byte().numpy()).save(paths[1])
    return paths


def run_cli(*args):
    with redirect_stdout(io.StringIO()) as out:
        code = main([str(a) for a in args])
    return code, out.getvalue()


def test_eval_reproduces_the_runs_metrics_and_writes_them(run_dir):
    code, out = run_cli("eval", run_dir, "--json", "--device", "cpu")
    assert code == 0
    result, saved = json.loads(out), json.loads((run_dir / "metrics.json").read_text())
    for key in ("recall@1", "recall@2", "map@r"):
        assert result[key] == pytest.approx(saved[key], abs=1e-4)
    assert result["flip"] is True and result["split"] == "test" and result["recall_at"] == [1, 2]
    assert result["model"] == "test_resnet.r160_in1k"
    assert json.loads((run_dir / "eval-digits.json").read_text()) == result


def test_eval_of_a_weights_file_takes_overrides(run_dir):
    code, out = run_cli("eval", run_dir / "model.safetensors", "--no-flip", "--recall-at", "1,4", "--json")
    result = json.loads(out)
    assert code == 0 and not result["flip"] and set(result) >= {"recall@1", "recall@4", "map@r"}
    assert 0 <= result["recall@1"] <= result["recall@4"] <= 1


def test_a_no_flip_eval_is_kept_beside_the_flip_one(run_dir):
    assert run_cli("eval", run_dir, "--no-flip", "--device", "cpu")[0] == 0
    assert json.loads((run_dir / "eval-digits-noflip.json").read_text())["flip"] is False


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "digitz"], "data.name"),
    (["--recall-at", "1,x"], "--recall-at"),
    (["--device", "bogus"], "--device bogus: not usable here"),
])
def test_eval_mistakes_exit_2(run_dir, capsys, args, message):
    assert main(["eval", str(run_dir), *args]) == 2
    assert message in capsys.readouterr().err


def test_eval_of_a_missing_folder_exits_2(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["test_resnet", "test_vit"])
@pytest.mark.parametrize("target", ["class", "embedding"])
def test_grad_cam_maps_are_normalised_at_input_size(model, target):
    torch.manual_seed(0)
    backbone = timm.create_model(model, pretrained=False, num_classes=0)
    net = RetrievalNet(backbone, 3).eval()
    size = backbone.pretrained_cfg["input_size"][-1]
    from autolr.eval.cam import block_modules

    modules = block_modules(backbone, model)
    cams = grad_cam(net, torch.randn(2, 3, size, size), [modules[0], modules[-1]], target)
    assert len(cams.maps) == 2 and len(cams.grids) == 2
    for m in cams.maps:
        assert m.shape == (2, size, size) and m.min() >= 0
        assert all(v == pytest.approx(1.0) or v == 0 for v in m.flatten(1).amax(1).tolist())
    assert (cams.top is not None) == (target == "class")


def test_default_blocks_spread_up_to_the_last():
    assert default_blocks(16) == [4, 8, 12, 16]
    assert default_blocks(2) == [1, 2]


def test_cam_writes_one_png_per_image(run_dir, images, tmp_path):
    code, out = run_cli("cam", run_dir, *images, "--blocks", "1,4", "--output", tmp_path / "cams")
    assert code == 0
    written = sorted(p.name for p in (tmp_path / "cams").iterdir())
    assert written == ["colour.png", "grey.png"] and out.split() == [str(tmp_path / "cams" / n) for n in ("grey.png", "colour.png")]
    for name in written:
        with Image.open(tmp_path / "cams" / name) as im:
            assert im.format == "PNG" and im.width > 2 * im.height  # input + 2 overlays in a row


def test_cam_default_output_is_the_run_folder(run_dir, images):
    code, _ = run_cli("cam", run_dir, images[0], "--target", "embedding")
    assert code == 0 and (run_dir / "cam" / "grey.png").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--blocks", "2,5"], "--blocks 5: the model has 4 kept blocks"),
    (["--target", "logits"], "--target 'logits'"),
])
def test_cam_mistakes_exit_2(run_dir, images, capsys, args, message):
    assert main(["cam", str(run_dir), str(images[0]), *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_cam_names_an_unreadable_image(run_dir, tmp_path, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    assert main(["cam", str(run_dir), str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert main(["cam", str(run_dir), str(tmp_path / "broken.jpg")]) == 2
    assert "broken.jpg" in capsys.readouterr().err


def test_cam_of_a_run_without_a_classification_head_asks_for_the_embedding_target(run_dir, images, capsys, monkeypatch):
    import autolr.eval.saved as evaluation

    load = evaluation.load_saved

    def headless(path):  # as a metric-loss run is saved: no training head
        saved = load(path)
        saved.net.head = None
        return saved

    monkeypatch.setattr(evaluation, "load_saved", headless)
    assert main(["cam", str(run_dir), str(images[0])]) == 2
    assert "use --target embedding" in " ".join(capsys.readouterr().err.split())
    assert main(["cam", str(run_dir), str(images[0]), "--target", "embedding"]) == 0
