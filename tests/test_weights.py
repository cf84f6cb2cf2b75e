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


# -- hub weights: the cache, the key check, offline and unreachable hubs ---------------------------------

REPO = "timm/test_resnet.r160_in1k"  # test_resnet's default pretrained tag


def fake_hub_cache(root, repo, state, filename="model.safetensors"):
    """A huggingface_hub cache as `hf download` leaves it: refs/main -> snapshots/<commit>/<file>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "snapshots" / commit / filename))
    return folder / "snapshots" / commit / filename


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def tiny_source():
    torch.manual_seed(4)
    return timm.create_model("test_resnet", pretrained=False, num_classes=1000)  # as on the hub: with a classifier


def test_hub_weights_load_from_the_cache_with_every_key_checked(hub_cache, tiny_source, caplog):
    fake_hub_cache(hub_cache, REPO, tiny_source.state_dict())
    with caplog.at_level("INFO", logger="autolr"):
        loaded = create_backbone(ModelConfig(name="test_resnet", pretrained=True))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(features(loaded, x), features(tiny_source, x))
    assert f"{REPO} (" in caplog.text and "every key checked" in caplog.text


def test_a_hub_file_missing_a_backbone_tensor_is_an_error_naming_it(hub_cache, tiny_source):
    state = tiny_source.state_dict()
    gone = [k for k, v in state.items() if v.ndim == 4][2]  # a conv weight timm would leave at random init
    fake_hub_cache(hub_cache, REPO, {k: v for k, v in state.items() if k != gone})
    with pytest.raises(AutolrError, match=rf"lacks backbone tensors .*: {gone}; .*hf download {REPO}"):
        create_backbone(ModelConfig(name="test_resnet", pretrained=True))


def test_offline_without_the_cache_names_the_repository_and_the_local_way(hub_cache):
    start = time.time()
    with pytest.raises(AutolrError, match=r"HF_HUB_OFFLINE.*`hf download timm/resnet50\.tv_in1k`.*model\.checkpoint"):
        create_backbone(ModelConfig(name="resnet50.tv_in1k", pretrained=True))
    assert time.time() - start < 5


def test_an_unreachable_hf_endpoint_fails_fast_with_the_same_fix(tmp_path):
    """Reachability is huggingface_hub's own: its HF_ENDPOINT (a mirror), its proxies, its offline flag."""
    import os
    import subprocess
    import sys

    code = (
        "import time; from autolr.model import create_backbone; from autolr.recipe import ModelConfig\n"
        "t = time.time()\n"
        "try: create_backbone(ModelConfig(name='test_resnet', pretrained=True))\n"
        "except Exception as e: print(type(e).__name__, round(time.time() - t, 1), e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout
    name, seconds, message = out.split(" ", 2)
    assert name == "AutolrError" and float(seconds) < 10, out
    assert "http://127.0.0.1:9 cannot be reached" in message and f"hf download {REPO}" in message
    assert "model.checkpoint" in message


def test_an_unknown_pretrained_tag_lists_the_real_ones():
    with pytest.raises(AutolrError, match=r"no pretrained tag 'bogus'; its tags are .*tv_in1k"):
        create_backbone(ModelConfig(name="resnet50.bogus", pretrained=False))


def test_a_tagged_name_round_trips_through_a_run_folder(tmp_path):
    cfg = ModelConfig(name="test_resnet.r160_in1k", pretrained=False, drop_top=1)
    net = RetrievalNet(create_backbone(cfg), num_classes=3).eval()
    save_model(net, cfg, tmp_path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(x), net(x))


# -- wrapper prefixes: compiled and DDP models' keys load into a bare one --------------------------------

def test_run_folders_with_compile_or_ddp_prefixes_still_load(tmp_path):
    """Run folders written before the fix hold `_orig_mod.` (compile) or `module.` (DDP) keys."""
    torch.manual_seed(5)
    cfg = ModelConfig(name="test_resnet", pretrained=False)
    net = RetrievalNet(create_backbone(cfg), num_classes=3).eval()
    save_model(net, cfg, tmp_path)
    prefixed = {f"_orig_mod.module.{k}": v for k, v in net.state_dict().items()}
    save_file({k: v.contiguous() for k, v in prefixed.items()}, str(tmp_path / "model.safetensors"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(x), net(x))
    reused = create_backbone(ModelConfig(name="test_resnet", pretrained=False, checkpoint=str(tmp_path)))
    torch.testing.assert_close(features(reused, x), features(net.backbone, x))


def test_save_model_never_writes_a_wrapper_prefix(tmp_path):
    from safetensors import safe_open

    cfg = ModelConfig(name="test_resnet", pretrained=False)
    net = RetrievalNet(create_backbone(cfg), num_classes=3)
    save_model(_Wrapped(net), cfg, tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not [k for k in keys if k.startswith(("_orig_mod.", "module."))]


class _Wrapped(torch.nn.Module):
    """Stands for torch.compile's wrapper: its state dict prefixes every key with `_orig_mod.`."""

    def __init__(self, net):
        super().__init__()
        self._orig_mod = net
        self.backbone, self.head = net.backbone, net.head

    def state_dict(self, *args, **kwargs):
        return self._orig_mod.state_dict(prefix="_orig_mod.")


# -- fixed-size models at another image size -------------------------------------------------------------

def test_a_fixed_size_model_is_built_for_the_recipes_image_size(tmp_path):
    cfg = ModelConfig(name="test_vit", pretrained=False)
    backbone = create_backbone(cfg, image_size=32)  # test_vit takes 160 px as timm ships it
    assert backbone.pretrained_cfg["input_size"][-1] == 32
    net = RetrievalNet(backbone, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    save_model(net, cfg, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(x), net(x))  # rebuilt at 32 px from model.json
    assert create_backbone(cfg).pretrained_cfg["input_size"][-1] == 160  # "auto": its own size


def test_hub_weights_of_a_fixed_size_model_get_resampled_position_embeddings(hub_cache):
    torch.manual_seed(6)
    source = timm.create_model("test_vit", pretrained=False, num_classes=1000)
    fake_hub_cache(hub_cache, "timm/test_vit.r160_in1k", source.state_dict())
    backbone = create_backbone(ModelConfig(name="test_vit", pretrained=True), image_size=32)
    assert backbone.pos_embed.shape[1] == 1 + 2 * 2  # 10x10 patches at 160 px resampled to 2x2
    torch.testing.assert_close(backbone.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("size", [8, 40])
def test_a_size_a_fixed_size_model_cannot_take_is_a_recipe_error(size):
    name = "test_vit" if size == 8 else "test_maxvit"  # 8 px: below one patch; 40 px: maxvit's windows
    with pytest.raises(AutolrError, match=rf"data.image_size = {size}: {name} takes 160 px images only.*data.image_size = 160"):
        create_backbone(ModelConfig(name=name, pretrained=False), image_size=size)


def test_url_only_weights_come_from_torch_hubs_cache(tmp_path, monkeypatch):
    """A few timm weights (gcvit, legacy_se*) have a URL and no hub copy: torch hub's cache serves them."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    name = "legacy_seresnet18.in1k"
    url = timm.models.get_pretrained_cfg(name).url
    with pytest.raises(AutolrError, match=r"offline: HF_HUB_OFFLINE is set\): download them to .*seresnet18-4bb0ce65.pth"):
        create_backbone(ModelConfig(name=name, pretrained=True))
    torch.manual_seed(7)
    source = timm.create_model(name, pretrained=False, num_classes=1000)
    (tmp_path / "checkpoints").mkdir()
    torch.save(source.state_dict(), tmp_path / "checkpoints" / url.rsplit("/", 1)[1])
    loaded = create_backbone(ModelConfig(name=name, pretrained=True))
    torch.testing.assert_close(loaded.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


@pytest.mark.parametrize(("error", "message"), [
    ("GatedRepoError", r"timm/test_resnet\.r160_in1k is a gated repository: .*`hf auth login`"),
    ("RepositoryNotFoundError", r"timm/test_resnet\.r160_in1k is not on https?://\S+ \(or needs a login"),
])
def test_a_gated_or_missing_repository_has_its_own_message(hub_cache, monkeypatch, error, message):
    import huggingface_hub
    from huggingface_hub import errors

    def head(url, **kw):  # what the hub answers; built without an HTTP response object
        cls = getattr(errors, error)
        exc = cls.__new__(cls)
        Exception.__init__(exc, "refused")
        raise exc

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", head)
    with pytest.raises(AutolrError, match=message):
        create_backbone(ModelConfig(name="test_resnet", pretrained=True))
