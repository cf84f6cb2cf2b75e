"""model.embedding_dim: 0 keeps the paper's network; N adds a Linear(d, N) layer that retrieval evaluates,
that trains with the neck, and that save/load_model rebuild."""

import timm
import torch

from autolr.model import RetrievalNet, load_model, param_groups, save_model
from autolr.recipe import ModelConfig


def net_with(embedding_dim, head=True, name="test_resnet"):
    torch.manual_seed(0)
    return RetrievalNet(timm.create_model(name, pretrained=False, num_classes=0), 3, embedding_dim=embedding_dim,
                        head=head).eval()


def test_no_embedding_is_the_papers_network():
    net = net_with(0)
    assert net.embedding is None and not any(k.startswith("embedding.") for k in net.state_dict())
    x = torch.randn(2, 3, 16, 16)
    pooled = net.backbone.forward_head(net.backbone.forward_features(x), pre_logits=True)
    assert torch.equal(net.embed(x), pooled) and net.head[0].in_features == net.backbone.num_features


def test_an_embedding_layer_is_what_retrieval_sees_and_trains_with_the_neck():
    net = net_with(8)
    x = torch.randn(2, 3, 16, 16)
    assert net.embed(x).shape == (2, 8) and net.head[0].in_features == 8 and net(x).shape == (2, 3)
    assert torch.count_nonzero(net.embedding.bias) == 0  # Proxy-Anchor's init: Kaiming fan-out, zero bias
    neck = next(g for g in param_groups(net, "test_resnet", 1e-3, 1e-2) if g["name"] == "neck")
    assert {id(p) for p in neck["params"]} >= {id(net.embedding.weight), id(net.embedding.bias)}
    assert neck["lr"] == 1e-3


def test_save_and_load_rebuild_the_embedding_with_and_without_a_head(tmp_path):
    x = torch.randn(2, 3, 16, 16)
    for head in (True, False):
        net = net_with(8, head=head)
        (tmp_path / str(head)).mkdir()
        save_model(net, ModelConfig(name="test_resnet", embedding_dim=8), tmp_path / str(head))
        loaded = load_model(tmp_path / str(head))
        assert (loaded.head is None) == (not head)
        torch.testing.assert_close(loaded.embed(x), net.embed(x), rtol=0, atol=0)
