"""pytorch-metric-learning losses by name: the papers' defaults reach PML, each loss trains, proxies train
in the head group, stay float32, survive a kill and --resume bit for bit, and stay out of the export."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import timm
import torch

import autolr
from autolr.cli import main
from autolr.errors import AutolrError
from autolr.model import RetrievalNet, param_groups
from autolr.recipe import LOSSES, LossConfig, parse_recipe
from autolr.train import losses, optim

METRIC = [name for name in LOSSES if name != "cross_entropy"]


def test_papers_defaults_reach_pml():
    cfg = LossConfig()
    pa = losses.build_loss("proxy_anchor", cfg, 5, 8).loss
    assert (pa.margin, pa.alpha, tuple(pa.proxies.shape)) == (0.1, 32.0, (5, 8))
    arc = losses.build_loss("arcface", cfg, 5, 8).loss
    assert arc.margin == pytest.approx(0.5, abs=1e-3) and arc.scale == 64  # 28.6 degrees = the paper's 0.5 rad
    assert losses.build_loss("normalized_softmax", cfg, 5, 8).loss.temperature == 0.05
    ms = losses.build_loss("multi_similarity", cfg, 5, 8)
    assert (ms.loss.alpha, ms.loss.beta, ms.loss.base, ms.miner.epsilon) == (2.0, 50.0, 1.0, 0.1)
    tri = losses.build_loss("triplet_margin", cfg, 5, 8)
    assert tri.loss.margin == tri.miner.margin == 0.2 and tri.miner.type_of_triplets == "semihard"
    assert tri.loss.distance.power == tri.miner.distance.power == 2  # FaceNet: squared Euclidean
    con = losses.build_loss("contrastive", cfg, 5, 8)
    assert (con.loss.pos_margin, con.loss.neg_margin, con.miner) == (0.0, 1.0, None)
    ours = losses.build_loss("multi_similarity", LossConfig(base=0.5, miner="none"), 5, 8)
    assert ours.loss.base == 0.5 and ours.miner is None


@pytest.mark.parametrize("name", METRIC)
def test_each_loss_trains_its_embedding_and_proxies_at_the_head_lr(name):
    torch.manual_seed(0)
    net = RetrievalNet(timm.create_model("test_resnet", pretrained=False, num_classes=0), 4, embedding_dim=16,
                       head=False)
    net.criterion = losses.build_loss(name, LossConfig(), 4, 16)
    groups = param_groups(net, "test_resnet", lr=1e-3, head_lr=1e-2)
    head = [p for g in groups if g["name"] == "head" for p in g["params"]]  # no head group for a pair loss
    assert {id(p) for p in head} == {id(p) for p in net.criterion.parameters()}  # the proxies, nothing else
    assert all(g["lr"] == 1e-2 for g in groups if g["name"] == "head")
    opt = optim.build_optimizer(groups, parse_recipe({"train": {"optimizer": "adamw"}}).train)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x, y = torch.randn(8, 3, 16, 16), torch.arange(4).repeat_interleave(2)  # 4 classes x 2 images
    for _ in range(3):
        opt.zero_grad()
        loss = net.criterion(net(x), y)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    moved = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert "embedding.weight" in moved and {n for n in before if n.startswith("criterion.")} <= moved


def test_proxies_stay_float32_under_bf16():
    crit = losses.build_loss("proxy_anchor", LossConfig(), 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = crit(torch.randn(6, 8).bfloat16(), torch.arange(6) % 3)
    assert loss.dtype == torch.float32 and crit.loss.proxies.dtype == torch.float32  # PML casts proxies in place


@pytest.mark.parametrize(("sets", "message"), [
    ({"train": {"loss": "proxyanchor"}}, "did you mean 'proxy_anchor'"),
    ({"train": {"loss": "multi_similarity"}}, "set data.samples_per_class"),
    ({"train": {"loss": "triplet_margin"}, "data": {"samples_per_class": 4, "batch_size": 4}}, "2 classes or more"),
    ({"train": {"loss": "proxy_anchor"}, "loss": {"scale": 3}}, "not an argument of train.loss = 'proxy_anchor'"),
    ({"loss": {"margin": 0.2}}, "takes none"),
    ({"train": {"loss": "arcface"}, "prune": {"mode": "search", "estimator": "heads"}}, "prune.estimator = 'full'"),
])
def test_loss_settings_are_checked(sets, message):
    with pytest.raises(AutolrError, match=message):
        parse_recipe(sets)


def test_unknown_loss_is_one_red_line_and_exit_2(capsys):
    assert main(["run", "quickstart", "--set", "train.loss=proxyanchor"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'proxy_anchor'" in err


# A proxy-anchor run on the digits: 5 training classes, 4 images each per batch, a 64-d embedding.
ARGS = ["model.name=test_resnet", "data.image_size=16", "data.workers=0", "data.batch_size=20",
        "data.samples_per_class=4", "model.embedding_dim=64", "train.loss=proxy_anchor", "train.optimizer=adamw",
        "train.lr=1e-3", "train.schedule=constant", "train.epochs=2", "eval.batch_size=512", "eval.flip=false"]


def sets(*items):
    return [a for item in items for a in ("--set", item)]


def proxies(run_dir):
    last = sorted((run_dir / "checkpoints").glob("epoch-*.pt"))[-1]
    return torch.load(last, weights_only=True)["model"]["criterion.loss.proxies"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("proxy") / "run"
    assert main(["run", "quickstart", "--output", str(out), *sets(*ARGS)]) == 0
    return out


def test_eval_reproduces_the_run_and_the_export_has_no_proxies(reference):
    from safetensors.torch import load_file

    metrics = json.loads((reference / "metrics.json").read_text())
    assert main(["eval", str(reference)]) == 0  # `autolr eval RUN`: the run's own test split, flip and K set
    result = json.loads((reference / "eval-digits-noflip.json").read_text())
    assert result["recall@1"] == metrics["recall@1"] and result["map@r"] == metrics["map@r"]
    saved = load_file(str(reference / "model.safetensors"))
    assert "embedding.weight" in saved and not any(k.startswith(("criterion.", "head.")) for k in saved)
    assert json.loads((reference / "model.json").read_text())["embedding_dim"] == 64
    assert autolr.load_model(reference).head is None


def test_proxies_survive_a_kill_and_resume_bit_for_bit(tmp_path, reference):
    out = tmp_path / "run"
    # as many threads as this process, which trained the reference: CPU reductions depend on the count
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "autolr", "run", "quickstart", "--output", str(out), *sets(*ARGS)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((out / "checkpoints").glob("epoch-0001.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # in epoch 2, or at worst after it: the resume then just finishes
    proc.wait()
    assert main(["run", str(out / "recipe.toml"), "--output", str(out), "--resume"]) == 0
    assert torch.equal(proxies(out), proxies(reference))
    assert json.loads((out / "metrics.json").read_text())["recall@1"] == json.loads(
        (reference / "metrics.json").read_text())["recall@1"]
