"""Weights: local safetensors/.pth round trips, run folders, key checks, the offline message."""

import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from autolr.errors import AutolrError
from autolr.model import RetrievalNet, create_backbone, load_model, save_model
from autolr.recipe import ModelConfig


def features(model, x):
    model.eval()
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.fixture
def source():
    torch.manual_seed(1)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)  # with its own classifier
    return model, torch.randn(2, 3, 64, 64)


def test_safetensors_round_trip_drops_the_classifier(tmp_path, source, caplog):
    model, x = source
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with caplog.at_level("INFO", logger="autolr"):
        loaded = create_backbone(ModelConfig(name="resnet18", pretrained=True, checkpoint=str(path)))
    torch.testing.assert_close(features(loaded, x), features(model, x))  # checkpoint wins over pretrained
    assert "dropped its classifier" in caplog.text


def test_pth_round_trip_with_a_wrapped_state_dict(tmp_path, source):
    model, x = source
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = create_backbone(ModelConfig(name="resnet18", pretrained=False, checkpoint=str(path)))
    torch.testing.assert_close(features(loaded, x), features(model, x))


def test_pth_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "obj": object()}, path)
    with pytest.raises(AutolrError, match="weights-only"):
        create_backbone(ModelConfig(name="resnet18", pretrained=False, checkpoint=str(path)))


def test_missing_and_unexpected_keys_are_named(tmp_path, source):
    model, _ = source
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("layer2.1.conv1")}
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(AutolrError, match="missing backbone keys: layer2.1.conv1.weight"):
        create_backbone(ModelConfig(name="resnet18", pretrained=False, checkpoint=str(tmp_path / "missing.safetensors")))
    state = {**{k: v.contiguous() for k, v in model.state_dict().items()}, "layer1.0.extra": torch.zeros(3)}
    save_file(state, str(tmp_path / "extra.safetensors"))
    with pytest.raises(AutolrError, match="unexpected keys: layer1.0.extra"):
        create_backbone(ModelConfig(name="resnet18", pretrained=False, checkpoint=str(tmp_path / "extra.safetensors")))
    with pytest.raises(AutolrError, match="does not fit resnet34"):
        create_backbone(ModelConfig(name="resnet34", pretrained=False, checkpoint=str(tmp_path / "extra.safetensors")))


def test_a_full_checkpoint_loads_into_a_cut_model(tmp_path, source, caplog):
    model, _ = source
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with caplog.at_level("INFO", logger="autolr"):
        cut = create_backbone(ModelConfig(name="resnet18", pretrained=False, drop_top=1, checkpoint=str(tmp_path / "w.safetensors")))
    torch.testing.assert_close(cut.layer4[0].conv1.weight, model.layer4[0].conv1.weight)
    assert "parts model.drop_top removed (layer4.1) not loaded" in caplog.text


def save(tmp_path, state, name="w.safetensors"):
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / name))
    return str(tmp_path / name)


@pytest.mark.parametrize("drop_top", [0, 1])
def test_a_stray_key_is_an_error_even_where_no_module_holds_it(tmp_path, source, drop_top):
    """Only the dropped blocks' keys are skipped: a key of a module that never existed is no cut block."""
    model, _ = source
    path = save(tmp_path, {**model.state_dict(), "layer9.0.conv1.weight": torch.zeros(3), "proj.bias": torch.zeros(2)})
    with pytest.raises(AutolrError, match="unexpected keys: layer9.0.conv1.weight, proj.bias"):
        create_backbone(ModelConfig(name="resnet18", pretrained=False, drop_top=drop_top, checkpoint=path))


def test_keys_under_a_kept_block_are_not_excused_by_the_cut(tmp_path, source):
    model, _ = source
    state = {**model.state_dict(), "layer4.0.extra": torch.zeros(1), "layer4.1.extra": torch.zeros(1)}
    with pytest.raises(AutolrError, match=r"unexpected keys: layer4\.0\.extra$"):  # layer4.1 was cut: fine
        create_backbone(ModelConfig(name="resnet18", pretrained=False, drop_top=1, checkpoint=save(tmp_path, state)))


def test_missing_and_unexpected_keys_are_named_together(tmp_path, source):
    model, _ = source
    state = {k: v for k, v in model.state_dict().items() if k != "bn1.weight"} | {"stray": torch.zeros(1)}
    with pytest.raises(AutolrError, match="missing backbone keys: bn1.weight; unexpected keys: stray"):
        create_backbone(ModelConfig(name="resnet18", pretrained=False, checkpoint=save(tmp_path, state)))


def test_a_cut_neck_and_a_classifier_of_another_size_are_skipped_and_said(tmp_path, caplog):
    torch.manual_seed(3)
    full = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=5)
    path = save(tmp_path, full.state_dict())
    with caplog.at_level("INFO", logger="autolr"):
        cut = create_backbone(ModelConfig(name="mobilenetv3_small_050", pretrained=False, drop_top=3, checkpoint=path))
    torch.testing.assert_close(cut.blocks[4][0].conv_pw.weight, full.blocks[4][0].conv_pw.weight)
    assert "dropped its classifier (classifier.bias (5,), classifier.weight (5, 1024))" in caplog.text
    # the cut blocks (blocks.5 whole) and the neck that no longer fits
    assert "removed (blocks.4.1, blocks.4.2, blocks.5, conv_head) not loaded" in caplog.text


def test_missing_file_is_named(tmp_path):
    with pytest.raises(AutolrError, match="no such file"):
        create_backbone(ModelConfig(name="resnet18", checkpoint=str(tmp_path / "nope.safetensors")))


def test_run_folder_round_trip_and_as_checkpoint(tmp_path):
    torch.manual_seed(2)
    cfg = ModelConfig(name="resnet18", pretrained=False, drop_top=1)
    net = RetrievalNet(create_backbone(cfg), num_classes=7)
    net.eval()
    save_model(net, cfg, tmp_path)
    x = torch.randn(3, 3, 64, 64)
    again = load_model(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x))
        torch.testing.assert_close(again.embed(x), net.embed(x))
    # a run folder as model.checkpoint: its backbone (pre-train on one dataset, fine-tune on another)
    reused = create_backbone(ModelConfig(name="resnet18", pretrained=False, drop_top=1, checkpoint=str(tmp_path)))
    torch.testing.assert_close(features(reused, x), features(net.backbone, x))


def test_offline_pretrained_fails_fast_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(AutolrError, match="set model.checkpoint|Set model.checkpoint"):
        create_backbone(ModelConfig(name="resnet18", pretrained=True))
    assert time.time() - start < 10


def test_unknown_model_name_suggests_one():
    with pytest.raises(AutolrError, match="did you mean resnet50"):
        create_backbone(ModelConfig(name="resnet5O", pretrained=False))
