"""Adapters: the paper's splits, coverage, truncation forward+backward per family, user adapters, CLI."""

import json
import sys

import autolr.adapters as registry
import pytest
import timm
import torch
from autolr.adapters import Adapter, BlockMap, get_adapter, register_adapter, split_parameters
from autolr.adapters.generic import GenericAdapter, feature_info_stages
from autolr.adapters.surgery import valid_depths

from autolr.cli import main
from autolr.errors import AutolrError

# one small model per explicit family, at a small input (name, image size, blocks)
FAMILIES = [
    ("resnet18", 64, 8, "resnet"),
    ("test_resnet", 64, 4, "resnet"),
    ("inception_v3", 75, 13, "inception_v3"),
    ("test_vit", 160, 6, "vit"),
    ("convnext_atto", 64, 12, "convnext"),
    ("efficientnet_b0", 64, 16, "efficientnet"),
    ("mobilenetv3_small_050", 64, 12, "efficientnet"),
    ("swin_tiny_patch4_window7_224", 224, 12, "swin"),
    ("poolformer_s12", 64, 12, "generic"),
    ("regnetx_002", 64, 13, "generic"),
    ("pit_ti_224", 224, 12, "generic"),  # no group_matcher: blocks from its feature_info
]


def build(name, **kw):
    return timm.create_model(name, pretrained=False, num_classes=0, **kw)


def assert_covered(model, bmap):
    parts = split_parameters(model, bmap)
    assert parts["unassigned"] == []
    names = [n for n, _ in parts["stem"]] + [n for b in parts["blocks"] for n, _ in b] + [n for n, _ in parts["head"]]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(names) == sorted(trainable)  # each exactly once
    assert all(b for b in parts["blocks"])  # no empty block


def test_paper_splits():
    r50 = build("resnet50")
    bmap = get_adapter("resnet50").block_map(r50)
    assert bmap.stem == ["conv1", "bn1"]
    assert [b[0] for b in bmap.blocks] == [f"layer{s}.{i}" for s, n in zip((1, 2, 3, 4), (3, 4, 6, 3), strict=True) for i in range(n)]
    inc = get_adapter("inception_v3").block_map(build("inception_v3"))
    assert inc.stem == [] and len(inc.blocks) == 13
    assert inc.blocks[0] == ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"]
    assert inc.blocks[1] == ["Conv2d_3b_1x1", "Conv2d_4a_3x3"] and inc.blocks[-1] == ["Mixed_7c"]
    vit = get_adapter("vit_small_patch16_224").block_map(build("vit_small_patch16_224"))
    assert len(vit.blocks) == 12 and vit.head == ["norm"]
    eff = get_adapter("efficientnet_b0").block_map(build("efficientnet_b0"))
    assert eff.head == ["conv_head", "bn2"] and ["conv_head"] not in eff.blocks


@pytest.mark.parametrize("name, size, blocks, family", FAMILIES)
def test_coverage_and_truncation_per_family(name, size, blocks, family):
    kw = {"img_size": size} if name.startswith(("test_vit", "swin")) else {}
    model = build(name, **kw)
    adapter = get_adapter(name)
    assert adapter.family == family
    bmap = adapter.block_map(model)
    assert len(bmap.blocks) == blocks
    assert_covered(model, bmap)
    before = sum(p.numel() for p in model.parameters())
    width = adapter.truncate(model, 2)
    cut = adapter.block_map(model)
    assert len(cut.blocks) == blocks - 2
    assert_covered(model, cut)
    assert sum(p.numel() for p in model.parameters()) < before  # dropped parameters are freed
    x = torch.randn(2, 3, size, size)
    emb = model.forward_head(model.forward_features(x), pre_logits=True)
    assert emb.shape == (2, getattr(model, "head_hidden_size", None) or width)
    emb.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_resnet50_feature_size_is_read_from_the_model():
    model = build("resnet50")
    assert get_adapter("resnet50").truncate(model, 2) == 2048  # layer4.0 already outputs 2048
    model = build("resnet50")
    assert get_adapter("resnet50").truncate(model, 3) == 1024  # without all of layer4
    assert model.forward_head(model.forward_features(torch.randn(1, 3, 64, 64)), pre_logits=True).shape == (1, 1024)


def test_efficientnet_neck_is_dropped_not_reinitialised():
    model = build("efficientnet_b0")
    get_adapter("efficientnet_b0").truncate(model, 1)
    assert isinstance(model.conv_head, torch.nn.Identity) and isinstance(model.bn2, torch.nn.Identity)
    assert model.num_features == 192


def test_generic_falls_back_to_feature_info():
    model = build("pit_ti_224")  # no group_matcher, and its stages sit in `transformers`
    assert not hasattr(model, "group_matcher")
    assert feature_info_stages(model) == ["transformers.0", "transformers.1", "transformers.2"]
    bmap = get_adapter("pit_ti_224").block_map(model)
    assert bmap.stem == ["cls_token", "patch_embed", "pos_embed"] and bmap.head == ["norm"]
    assert bmap.blocks[2] == ["transformers.1.pool", "transformers.1.blocks.0"]  # a stage's pooling: its first block
    assert get_adapter("pit_ti_224").truncate(model, 4) == 128  # all of stage 3: the final norm (256) goes
    assert isinstance(model.transformers[2], torch.nn.Identity) and isinstance(model.norm, torch.nn.Identity)
    assert model.forward_head(model.forward_features(torch.randn(1, 3, 224, 224)), pre_logits=True).shape == (1, 128)


def test_a_neck_container_that_no_longer_fits_goes_whole():
    model = build("hgnetv2_b0")  # head.last_conv = conv(1024 -> 2048), act, affine: after pooling
    assert get_adapter("hgnetv2_b0").truncate(model, 1) == 512
    assert isinstance(model.head.last_conv, torch.nn.Identity)  # timm's reset_classifier needs it so
    assert model.forward_head(model.forward_features(torch.randn(2, 3, 64, 64)), pre_logits=True).shape == (2, 512)


def test_vit_keeps_its_final_norm():
    model = build("test_vit", img_size=160)
    norm = model.norm
    get_adapter("test_vit").truncate(model, 3)
    assert model.norm is norm and len(get_adapter("test_vit").block_map(model).blocks) == 3


@pytest.mark.parametrize("depth", [-1, 8, 20])
def test_impossible_depth_names_the_valid_range(depth):
    with pytest.raises(AutolrError, match=r"resnet18 with 8 blocks \(valid: 0\.\.7\)"):
        get_adapter("resnet18").truncate(build("resnet18"), depth)


def tiny_densenet():
    from timm.models.densenet import DenseNet

    torch.manual_seed(0)
    return DenseNet(growth_rate=8, block_config=(2, 3), num_classes=0)  # blocks: 2 + 3 dense layers


def test_a_cut_the_family_cannot_make_names_the_depths_that_work():
    model = tiny_densenet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # a dense layer feeds every later one: only whole dense blocks can go (3: all of denseblock2)
    with pytest.raises(AutolrError, match=r"DenseNet cannot be cut .*valid: 0, 3, or register"):
        GenericAdapter().truncate(model, 1)
    after = model.state_dict()  # the failed cut is undone
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert GenericAdapter().truncate(model, 3) == 16  # transition1's output: norm5 (52) is dropped
    assert isinstance(model.features.denseblock2, torch.nn.Identity)
    assert model.forward_head(model.forward_features(torch.randn(1, 3, 64, 64)), pre_logits=True).shape == (1, 16)


def test_valid_depths_search_is_time_boxed():
    model = tiny_densenet()
    adapter = GenericAdapter()
    bmap = adapter.block_map(model)
    assert valid_depths(model, bmap, adapter.neck(model)) == ([0, 3], 0)
    assert valid_depths(model, bmap, adapter.neck(model), budget_s=0) == ([0, 3], 3)  # whole blocks first


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", list(registry.adapters()))
    yield


class _TwoHalves(Adapter):
    family = "halves"

    def block_map(self, model):
        return BlockMap(stem=["conv1", "bn1"], blocks=[["layer1", "layer2"], ["layer3", "layer4"]], head=[])


def test_user_adapter_by_decorator(clean_registry):
    register_adapter("resnet18")(_TwoHalves)
    adapter = get_adapter("resnet18")
    assert adapter.family == "halves"
    model = build("resnet18")
    assert_covered(model, adapter.block_map(model))
    assert get_adapter("resnet34").family == "resnet"  # others untouched


def test_user_adapter_by_entry_point(tmp_path, monkeypatch, clean_registry):
    pkg = tmp_path / "my_adapters.py"
    pkg.write_text(
        "from autolr.adapters import Adapter, BlockMap, register_adapter\n"
        "@register_adapter('mynet*')\n"
        "class MyNet(Adapter):\n"
        "    family = 'mynet'\n"
        "    def block_map(self, model):\n"
        "        return BlockMap(stem=[], blocks=[['a'], ['b']], head=[])\n"
    )
    dist = tmp_path / "my_adapters-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-adapters\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[autolr.adapters]\nmynet = my_adapters\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_LOADED", False)
    monkeypatch.delitem(sys.modules, "my_adapters", raising=False)
    assert get_adapter("mynet_small").family == "mynet"


def test_registering_imports_neither_torch_nor_timm():
    import subprocess

    code = "import sys, autolr.adapters as a; a.adapters(); print('torch' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_cli_show_json_and_table(capsys):
    assert main(["adapters", "show", "resnet50", "--prune", "2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["adapter"] == "resnet" and len(info["blocks"]) == 14 and info["num_features"] == 2048
    assert info["blocks"][-1] == ["layer4.0"] and info["stem"] == ["conv1", "bn1"]
    assert main(["adapters", "show", "inception_v3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["blocks"]) == 13
    assert main(["adapters", "show", "test_resnet"]) == 0
    assert "block 4" in capsys.readouterr().out
    assert main(["adapters", "list"]) == 0
    assert "inception_v3" in capsys.readouterr().out
    assert main(["adapters", "show", "resnet50", "--prune", "16"]) == 2
    assert "(valid: 0..15)" in capsys.readouterr().err
    assert main(["adapters", "show", "resnet5O"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_a_name_with_its_pretrained_tag_has_its_architectures_adapter(capsys):
    """The paper recipes name resnet50.tv_in1k: the tag picks weights, never another block map."""
    from autolr.adapters import get_adapter

    assert get_adapter("resnet50.tv_in1k").family == get_adapter("resnet50").family == "resnet"
    assert main(["adapters", "show", "test_resnet.r160_in1k", "--prune", "1", "--json"]) == 0
    tagged = json.loads(capsys.readouterr().out)
    assert main(["adapters", "show", "test_resnet", "--prune", "1", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert tagged["model"] == "test_resnet.r160_in1k" and {**tagged, "model": "test_resnet"} == plain
    assert main(["adapters", "show", "resnet50.tv_in1kk"]) == 2
    assert "its tags are" in capsys.readouterr().err
