"""Iterative pruning: SILO's curve and cycle shapes by hand, then tiny end-to-end runs of every schedule
(retrieval on a fake CUB, classification on a fake CIFAR-10), an interrupted run resumed, and the oracle."""

import hashlib
import json

import pytest
import torch
from _fake_datasets import make_cifar10, make_cub
from safetensors.torch import load_file

import autolr
from autolr.errors import AutolrError
from autolr.modes import iterative
from autolr.modes.iterative import check_recipe
from autolr.recipe import PruneConfig
from autolr.train.schedules import cycle_factor, cycle_lr, silo_max_lr

TINY = [
    "model.name=test_resnet", "model.pretrained=false", "data.image_size=16", "data.workers=0", "data.batch_size=8",
    "data.strict_counts=false", "eval.batch_size=64", "eval.flip=false", "train.schedule='constant'",
    "prune.mode='iterative'", "prune.warmup_epochs=0",
]


# -- the math --------------------------------------------------------------------------------------

def test_silo_max_lr_with_the_resnet20_defaults():
    assert autolr.silo_max_lr is silo_max_lr
    assert silo_max_lr(0) == silo_max_lr(1) == 0.03  # no rise before the delay
    assert silo_max_lr(4) == pytest.approx(0.048, abs=5e-4)
    assert silo_max_lr(5) == pytest.approx(0.065, abs=1e-3)
    assert all(silo_max_lr(k) == pytest.approx(0.070, abs=5e-4) for k in (7, 8, 12))
    assert silo_max_lr(6, offset=0.04, a=0.06) > 0.04  # VGG-19's values shift and stretch the curve


def test_cycle_factor_warms_up_then_divides_by_10_and_100():
    shape = dict(epochs=8, warmup=2, decay_at=[0.5, 0.75])
    assert cycle_factor(0, 0, 4, **shape) == pytest.approx(1 / 8)  # the first step already trains
    assert cycle_factor(1, 3, 4, **shape) == 1.0
    assert [cycle_factor(e, 0, 4, **shape) for e in (2, 3, 4, 5, 6, 7)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert cycle_factor(4, 0, 4, epochs=8, warmup=0, decay_at=[]) == 1.0


def test_each_schedule_sets_its_cycle_lrs():
    def lr(schedule, cycle, **kw):
        r = cycle_lr(PruneConfig(lr_schedule=schedule, warmup_epochs=1, max_lr=0.1, finetune_lr=0.002, **kw), 4, cycle,
                     oracle_lr=0.05)
        return r.max_lr, [r.base * r.factor(e, 0, 1) for e in range(4 if cycle == 0 else kw.get("cycle_epochs") or 4)]

    assert lr("silo", 0) == (0.03, pytest.approx([0.03, 0.03, 0.003, 0.0003]))
    assert lr("silo", 5)[0] == silo_max_lr(5)
    assert lr("warmup", 3) == lr("warmup", 0) == (0.1, pytest.approx([0.1, 0.1, 0.01, 0.001]))
    assert lr("lr_rewind", 2, cycle_epochs=2) == (pytest.approx(0.01), pytest.approx([0.01, 0.001]))  # cycle 0's end
    assert lr("finetune", 1) == (0.002, [0.002] * 4) and lr("finetune", 0)[0] == 0.1
    assert lr("oracle", 1)[0] == 0.05 and lr("oracle", 0)[0] == 0.1


@pytest.mark.parametrize(("settings", "message"), [
    (["prune.rewind='weights'", "prune.rewind_epoch=3"], "prune.rewind_epoch = 3 is beyond cycle 0"),
    (["prune.lr_schedule='lr_rewind'", "prune.cycle_epochs=3"], "set prune.cycle_epochs to at most 2"),
])
def test_impossible_settings_are_errors(settings, message):
    with pytest.raises(AutolrError, match=message):
        check_recipe(autolr.load_recipe("quickstart", [*TINY, "train.epochs=2", *settings]))


def test_an_unknown_metric_stops_before_training_and_leaves_nothing(cub, tmp_path):
    recipe = autolr.load_recipe("quickstart", [*TINY, *cub, "eval.recall_at=[1, 2]", "prune.metric='recall@4'"])
    with pytest.raises(AutolrError, match="prune.metric = 'recall@4': this run measures recall@1, recall@2, map@r"):
        autolr.run(recipe, output=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- end to end ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return ["data.name='cub200'", f"data.root={json.dumps(str(make_cub(root, classes=4, per_class=4).folder))}",
            f"data.cache_dir={json.dumps(str(root / 'cache'))}"]


def rows(run_dir, kind):
    return [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if r["kind"] == kind]


def masks_in(checkpoint):
    state = torch.load(checkpoint, weights_only=True)["model"]
    return {k.removesuffix("_mask"): v for k, v in state.items() if k.endswith("_mask")}, state


SILO = ["train.epochs=2", "prune.cycles=2", "prune.silo_delay=0", "prune.silo_offset=0.02"]


@pytest.fixture(scope="module")
def silo_run(cub, tmp_path_factory):
    recipe = autolr.load_recipe("quickstart", [*TINY, *cub, *SILO])
    return autolr.run(recipe, output=tmp_path_factory.mktemp("silo") / "run")


def test_silo_run_logs_every_cycle_and_exports_zeros(silo_run):
    cycles = rows(silo_run.run_dir, "cycle")
    assert [c["cycle"] for c in cycles] == [0, 1, 2] and [c["epoch"] for c in cycles] == [2, 4, 6]
    assert [c["remaining"] for c in cycles] == pytest.approx([1.0, 0.8, 0.64], abs=1e-3)
    assert [c["sparsity"] for c in cycles] == pytest.approx([0.0, 0.2, 0.36], abs=1e-3)
    assert [c["max_lr"] for c in cycles] == [silo_max_lr(k, delay=0, offset=0.02) for k in range(3)]
    assert {(c["metric"], c["lr_schedule"]) for c in cycles} == {("recall@1", "silo")}
    assert [r["epoch"] for r in rows(silo_run.run_dir, "epoch")] == [1, 2, 3, 4, 5, 6]
    assert (silo_run.run_dir / "report" / "pruning_cycles.png").read_bytes().startswith(b"\x89PNG")
    m = silo_run.metrics
    assert m["prune.mode"] == "iterative" and m["prune.lr_schedule"] == "silo" and m["total_epochs"] == 6
    assert [c["score"] for c in m["cycles"]] == [c["score"] for c in cycles] and m["recall@1"] == cycles[-1]["score"]
    masks, state = masks_in(silo_run.run_dir / "checkpoints" / "epoch-0006.pt")
    exported = load_file(str(silo_run.run_dir / "model.safetensors"))
    assert not any(k.endswith(("_orig", "_mask")) for k in exported)
    for name, mask in masks.items():  # the last cycle trained on, masked: exactly zero where pruned
        assert torch.equal(exported[name] == 0, mask == 0) and bool((state[f"{name}_orig"][mask == 0] == 0).all())
    net = autolr.load_model(silo_run.run_dir)  # folded weights load into a plain network
    assert sum(int((p == 0).sum()) for n, p in net.named_parameters() if n in masks) == sum(
        int((m == 0).sum()) for m in masks.values())


def test_an_interrupted_run_resumes_with_its_masks(cub, silo_run, tmp_path, monkeypatch):
    recipe = autolr.load_recipe("quickstart", [*TINY, *cub, *SILO])
    original = iterative.train_one_epoch

    def stop_in_cycle_2(trainer, epoch):
        if epoch == 5:  # cycle 2's second epoch: its first is checkpointed
            raise KeyboardInterrupt
        return original(trainer, epoch)

    monkeypatch.setattr(iterative, "train_one_epoch", stop_in_cycle_2)
    with pytest.raises(KeyboardInterrupt):
        autolr.run(recipe, output=tmp_path / "run")
    masks, state = masks_in(tmp_path / "run" / "checkpoints" / "epoch-0005.pt")
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert kept == pytest.approx(0.64, abs=1e-3)
    assert all(bool((state[f"{n}_orig"][m == 0] == 0).all()) for n, m in masks.items())
    monkeypatch.setattr(iterative, "train_one_epoch", original)
    resumed = autolr.run(recipe, output=tmp_path / "run", resume=True)
    assert [c["score"] for c in resumed.metrics["cycles"]] == [c["score"] for c in silo_run.metrics["cycles"]]
    assert resumed.metrics["recall@1"] == silo_run.metrics["recall@1"]
    assert [r["epoch"] for r in rows(tmp_path / "run", "epoch")] == [1, 2, 3, 4, 5, 6]
    assert [r["cycle"] for r in rows(tmp_path / "run", "cycle")] == [0, 1, 2]


@pytest.mark.parametrize("schedule", ["warmup", "lr_rewind", "finetune"])
def test_baseline_schedules_run(cub, tmp_path, schedule):
    """warmup also rewinds weights to the end of epoch 1 and prunes by movement."""
    extra = {"warmup": ["prune.rewind='weights'", "prune.rewind_epoch=1", "prune.criterion='movement'"],
             "lr_rewind": ["prune.cycle_epochs=1"], "finetune": ["prune.finetune_lr=0.001"]}[schedule]
    recipe = autolr.load_recipe("quickstart", [*TINY, *cub, "train.epochs=2", "prune.cycles=1", "prune.max_lr=0.05",
                                               f"prune.lr_schedule={schedule!r}", *extra])
    result = autolr.run(recipe, output=tmp_path / "run")
    cycles, epochs = rows(result.run_dir, "cycle"), rows(result.run_dir, "epoch")
    assert [c["remaining"] for c in cycles] == pytest.approx([1.0, 0.8], abs=1e-3)
    last_lrs = [r["lrs"][0] for r in epochs]  # each epoch's last LR (every group alike)
    assert all(r["lrs"] == [r["lrs"][0]] * len(r["lrs"]) for r in epochs)
    if schedule == "warmup":  # 2 epochs with decays at 0.5 and 0.75: the second epoch decays mid-way
        assert last_lrs == pytest.approx([0.05, 0.0005, 0.05, 0.0005]) and cycles[1]["max_lr"] == 0.05
        rewound = torch.load(result.run_dir / "checkpoints" / "rewind.pt", weights_only=True)
        masks, state = masks_in(result.run_dir / "checkpoints" / "epoch-0004.pt")
        assert rewound.keys() == {k for k in state if not k.endswith("_mask")}
    elif schedule == "lr_rewind":  # the one retraining epoch replays cycle 0's last
        assert last_lrs == pytest.approx([0.05, 0.0005, 0.0005]) and cycles[1]["max_lr"] == pytest.approx(0.005)
    else:
        assert last_lrs == pytest.approx([0.05, 0.0005, 0.001, 0.001]) and cycles[1]["max_lr"] == 0.001


def test_rewinding_puts_the_survivors_back(cub, tmp_path):
    recipe = autolr.load_recipe("quickstart", [*TINY, *cub, "train.epochs=1", "prune.cycles=1", "prune.rewind='weights'",
                                               "train.keep_checkpoints=2"])
    result = autolr.run(recipe, output=tmp_path / "run")
    rewound = torch.load(result.run_dir / "checkpoints" / "rewind.pt", weights_only=True)  # epoch 0: the init
    masks, state = masks_in(result.run_dir / "checkpoints" / "epoch-0001.pt")  # cycle 1 starts here
    for name, mask in masks.items():
        assert torch.equal(state[f"{name}_orig"], rewound[f"{name}_orig"] * mask)


def test_oracle_branches_every_candidate_from_the_same_pruned_state(tmp_path, monkeypatch):
    fake = make_cifar10(tmp_path / "data", classes=4, per_class=5)
    starts = {}
    original = iterative.train_one_epoch

    def record(trainer, epoch):
        if epoch == 1:  # cycle 1's only epoch: hash what each candidate starts from
            state = trainer.model.state_dict()
            digest = hashlib.sha256(b"".join(state[k].cpu().numpy().tobytes() for k in sorted(state))).hexdigest()
            starts[trainer.optimizer.param_groups[0]["base_lr"]] = (digest, len(trainer.optimizer.state))
        return original(trainer, epoch)

    monkeypatch.setattr(iterative, "train_one_epoch", record)
    recipe = autolr.load_recipe("quickstart", [
        *TINY, "data.name='cifar10'", f"data.root={json.dumps(str(fake.folder))}", "train.epochs=1", "prune.cycles=1",
        "prune.lr_schedule='oracle'", "prune.oracle_grid=[0.01, 0.2, 0.05]"])
    result = autolr.run(recipe, output=tmp_path / "run")
    assert starts.keys() == {0.01, 0.2, 0.05} and len(set(starts.values())) == 1
    assert next(iter(starts.values()))[1] == 0  # a fresh optimizer
    candidates = rows(result.run_dir, "oracle_candidate")
    assert [c["max_lr"] for c in candidates] == [0.01, 0.2, 0.05] and sum(c["chosen"] for c in candidates) == 1
    chosen = next(c for c in candidates if c["chosen"])
    assert chosen["score"] == max(c["score"] for c in candidates)
    cycles = result.metrics["cycles"]
    assert [c["metric"] for c in cycles] == ["accuracy", "accuracy"] and cycles[1]["max_lr"] == chosen["max_lr"]
    assert cycles[1]["val_score"] == chosen["score"] and result.metrics["accuracy"] == cycles[1]["score"]
    assert [r["epoch"] for r in rows(result.run_dir, "epoch")] == [1, 2]  # the chosen candidate's epoch only
    # `autolr eval` scores the exported (mask-folded) classifier as the run did
    from autolr.eval.saved import evaluate_saved

    again = evaluate_saved(result.run_dir, device="cpu")
    assert again["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-6)
    assert again["accuracy@5"] == pytest.approx(result.metrics["accuracy@5"], abs=1e-6)
