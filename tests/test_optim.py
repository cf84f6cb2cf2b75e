"""Optimizers from timm's factory over autolr's own param groups: every family steps with each group's LR,
weight decay spares norms and biases when asked, and AutoLR's reset forgets all an optimizer keeps."""

import json

import pytest
import timm
import torch

import autolr
from autolr.cli import main
from autolr.errors import AutolrError
from autolr.model import RetrievalNet, param_groups
from autolr.recipe import parse_recipe
from autolr.train import optim

FAMILIES = ["sgd", "adamw", "lamb", "lion", "adan", "lookahead_adamw"]  # SGD, Adam, layer-wise, sign, 3-beta, wrapper


def tiny_net(name="test_resnet", seed=0):
    torch.manual_seed(seed)
    return RetrievalNet(timm.create_model(name, pretrained=False, num_classes=0), num_classes=3)


def train_cfg(**over):
    return parse_recipe({"train": over}).train


def steps(net, opt, n=3, seed=1):
    """n steps on fixed random batches; the global seed too, for the head's dropout."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(6, 3, 16, 16, generator=g), torch.arange(6) % 3
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_steps_each_group_at_its_own_lr(name):
    net = tiny_net()
    groups = param_groups(net, "test_resnet", lr=1e-3, head_lr=1e-2)
    groups[0]["lr"] = 0.0  # the stem frozen through its LR alone
    opt = optim.build_optimizer(groups, train_cfg(optimizer=name, weight_decay=0.0))
    assert [g["name"] for g in opt.param_groups] == [g["name"] for g in groups]  # timm keeps our groups and keys
    assert all("base_lr" in g for g in opt.param_groups)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    steps(net, opt)
    moved = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    stem = {n for n, p in net.named_parameters() if any(p is q for q in opt.param_groups[0]["params"])}
    assert stem and not stem & moved  # lr 0: untouched
    assert {n for n in before if n.startswith("head.")} <= moved


def test_no_decay_on_norms_biases_and_vit_tokens():
    net = tiny_net("test_vit")
    exempt = {id(p) for n, p in net.backbone.named_parameters() if n in net.backbone.no_weight_decay()}
    opt = optim.build_optimizer(param_groups(net, "test_vit", 1e-3, 1e-2),
                                train_cfg(optimizer="adamw", weight_decay=0.05, weight_decay_1d=False), exempt)
    twins = [g for g in opt.param_groups if optim.is_twin(g)]
    assert twins and all(g["weight_decay"] == 0.0 for g in twins)
    assert all(g["weight_decay"] == 0.05 for g in optim.named_groups(opt))
    spared = {id(p) for g in twins for p in g["params"]}
    names = {id(p): n for n, p in net.named_parameters()}
    assert {"backbone.pos_embed", "backbone.cls_token", "backbone.blocks.0.norm1.weight", "head.0.bias"} <= {
        names[i] for i in spared}
    assert all(p.ndim > 1 and id(p) not in exempt for g in optim.named_groups(opt) for p in g["params"])
    assert len(spared) + sum(len(g["params"]) for g in optim.named_groups(opt)) == len(list(net.parameters()))
    block = next(g for g in opt.param_groups if g["name"] == "block3")
    block["base_lr"] = 0.123
    optim.sync_no_decay(opt)
    assert next(g for g in twins if g["name"] == "no_decay:block3")["base_lr"] == 0.123


@pytest.mark.parametrize("name", ["adamw", "lamb", "adan", "lookahead_adamw"])
def test_reset_state_makes_the_optimizer_as_new(name):
    """Lamb and Adan count steps in their param groups, Lookahead keeps its slow weights in the inner
    optimizer: clearing `optimizer.state` alone leaves them, and the next steps differ from a fresh start."""
    def after_reset(reset):
        net = tiny_net()
        start = {k: v.clone() for k, v in net.state_dict().items()}
        opt = optim.build_optimizer(param_groups(net, "test_resnet", 1e-2, 1e-2), train_cfg(optimizer=name))
        steps(net, opt, n=7, seed=5)  # some history
        net.load_state_dict(start)
        reset(opt)
        steps(net, opt)
        return [p.detach().clone() for p in net.parameters()]

    def clear(opt):  # what AutoLR did before: enough for SGD's momentum and Adam's moments
        opt.state.clear()

    cleared = after_reset(clear)
    net = tiny_net()
    opt = optim.build_optimizer(param_groups(net, "test_resnet", 1e-2, 1e-2), train_cfg(optimizer=name))
    steps(net, opt)
    new = [p.detach() for p in net.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after_reset(optim.reset_state), new, strict=True))
    if name != "adamw":  # Adam keeps its step count per parameter: clearing the state is enough there
        assert not all(torch.equal(a, b) for a, b in zip(cleared, new, strict=True))


def test_snapshot_restores_lookahead_state_bit_for_bit():
    net = tiny_net()
    opt = optim.build_optimizer(param_groups(net, "test_resnet", 1e-2, 1e-2), train_cfg(optimizer="lookahead_lamb"))
    steps(net, opt, n=4)
    weights, state = {k: v.clone() for k, v in net.state_dict().items()}, optim.snapshot_state(opt)
    runs = []
    for _ in range(2):
        net.load_state_dict(weights)
        optim.restore_state(opt, state)
        steps(net, opt, n=5, seed=2)  # 5 steps: Lookahead syncs its slow weights at step 6 of its count
        runs.append([p.detach().clone() for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize(("train", "message"), [
    ({"optimizer": "adamww"}, "did you mean 'adamw'"),
    ({"optimizer": "adahessian"}, "second-order"),
    ({"optimizer": "adan", "betas": [0.9, 0.99]}, "adan takes 3 betas"),
    ({"eps": 1e-8}, "'sgd' has no eps"),
    ({"optimizer": "lion", "eps": 1e-8}, "'lion' has no eps"),
])
def test_optimizer_settings_are_checked(train, message):
    with pytest.raises(AutolrError, match=message):
        parse_recipe({"train": train})


def test_unknown_optimizer_is_one_red_line_and_exit_2(capsys):
    assert main(["run", "quickstart", "--set", "train.optimizer=adamww"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'adamw'" in err


TINY = ["model.name=test_resnet", "data.image_size=16", "data.workers=0", "data.batch_size=64", "eval.batch_size=512",
        "eval.flip=false", "train.epochs=1", "train.optimizer=adamw", "train.lr=1e-3", "train.weight_decay_1d=false"]


def test_adamw_with_autolr_logs_every_group_and_replays_a_trial(tmp_path):
    """AutoLR over AdamW's groups: every trial row and the epoch row carry every group's LR (no twin
    groups), and a trial restarted from the epoch's snapshot with Adam's moments cleared replays exactly."""
    recipe = autolr.load_recipe("quickstart", [*TINY, "autolr.max_trials=2", "autolr.tau=1.0", "autolr.strict=true"])
    result = autolr.run(recipe, output=tmp_path / "run")
    rows = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    epoch = next(r for r in rows if r["kind"] == "epoch")
    assert epoch["groups"] == ["stem", "block1", "block2", "block3", "block4", "head"]
    assert len(epoch["lrs"]) == 6 and [r["trial"] for r in rows if r["kind"] == "trial"] == [1, 2]


@pytest.mark.parametrize("name", ["adamw", "lookahead_lamb"])
def test_an_autolr_trial_replays_exactly_from_its_snapshot(tmp_path, name):
    """What AutoLR does between trials: restore the epoch-start snapshot, clear the optimizer; the rerun
    epoch then gives the same weights bit for bit (Adam's moments, Lamb's group step, Lookahead's slow
    weights all restart)."""
    from accelerate import Accelerator

    from autolr.rundir import RunDir
    from autolr.train.loop import setup, train_one_epoch
    from autolr.train.snapshots import restore, snapshot

    recipe = autolr.load_recipe("quickstart", [*TINY, f"train.optimizer={name}", "data.batch_size=128"])
    rundir = RunDir.open(recipe, output=tmp_path / "run", resume=False, overwrite=False)
    trainer = setup(recipe, Accelerator(cpu=True), rundir)
    start = snapshot(trainer)
    runs = []
    for _ in range(2):
        restore(trainer, start)
        optim.reset_state(trainer.optimizer)
        train_one_epoch(trainer, 0)
        runs.append([p.detach().clone() for p in trainer.model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
