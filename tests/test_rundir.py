"""The run folder's life without training: the global batch split, file modes, what --resume finds, what a
failed start removes, and the main process as the only reader of the folder under several processes."""

import os

import pytest
import torch
from safetensors.torch import save_file

import autolr
from autolr import fileio
from autolr import rundir as rundir_module
from autolr.errors import AutolrError
from autolr.rundir import RunDir, check_resumable, load_shared, main_reads
from autolr.train.accel import per_process_batch

TINY = ["model.name=test_resnet", "model.pretrained=false", "data.image_size=16", "train.epochs=2"]


def test_the_global_batch_splits_over_the_processes_or_names_the_nearest_sizes():
    assert per_process_batch(40, 1) == 40 and per_process_batch(40, 2) == 20 and per_process_batch(40, 8) == 5
    assert per_process_batch(41, 1) == 41  # one process: nothing to split
    with pytest.raises(AutolrError, match=r"data.batch_size = 41 is the global batch .* 2 processes: use 40 or 42"):
        per_process_batch(41, 2)
    with pytest.raises(AutolrError, match="3 processes: use 39 or 42"):
        per_process_batch(40, 3)
    with pytest.raises(AutolrError, match="4 processes: use 4$"):
        per_process_batch(2, 4)
    assert per_process_batch(40, 2, samples_per_class=4) == 20  # 2 x (5 classes x 4 images)
    with pytest.raises(AutolrError, match="2 processes x data.samples_per_class = 4: use 32 or 40"):
        per_process_batch(36, 2, samples_per_class=4)


def test_every_run_file_gets_the_umask_mode_whoever_writes_it(tmp_path):
    old = os.umask(0o027)
    try:
        fileio.atomic_write(tmp_path / "model.safetensors", lambda p: save_file({"w": torch.zeros(2)}, str(p)))
        fileio.write_json(tmp_path / "metrics.json", {})
        fileio.atomic_write(tmp_path / "ckpt.pt", lambda p: torch.save({}, p))
    finally:
        os.umask(old)
    modes = {f.name: f.stat().st_mode & 0o777 for f in tmp_path.iterdir()}
    assert modes == {"model.safetensors": 0o640, "metrics.json": 0o640, "ckpt.pt": 0o640}


def _finished(tmp_path, *, epochs=2, split="test", checkpoint=True):
    recipe = autolr.load_recipe("quickstart", TINY)
    rundir = RunDir.open(recipe, output=tmp_path / "run", resume=False, overwrite=False)
    fileio.write_json(rundir.path / "metrics.json", {"epochs": epochs, "split": split})
    if split == "test":
        fileio.write_text(rundir.path / "model.safetensors", "")
    if checkpoint:
        fileio.write_text(rundir.checkpoints / f"epoch-{epochs:04d}.pt", "")
    return rundir


def test_resume_finds_a_finished_run_or_extends_it_from_its_final_checkpoint(tmp_path):
    rundir = _finished(tmp_path)
    assert rundir.resume_state(autolr.load_recipe("quickstart", TINY)) == "finished"
    assert rundir.resume_state(autolr.load_recipe("quickstart", [*TINY, "train.epochs=5"])) == "extend"
    (rundir.checkpoints / "epoch-0002.pt").unlink()
    with pytest.raises(AutolrError, match="finished at epoch 2 .* train.epochs = 5: its final checkpoint epoch-0002.pt is gone"):
        rundir.resume_state(autolr.load_recipe("quickstart", [*TINY, "train.epochs=5"]))


def test_a_finished_selection_run_cannot_be_extended(tmp_path):
    rundir = _finished(tmp_path, split="val", checkpoint=False)
    with pytest.raises(AutolrError, match="a selection run keeps no checkpoints"):
        rundir.resume_state(autolr.load_recipe("quickstart", [*TINY, "train.epochs=3"]))


def test_resume_may_change_speed_keys_but_not_the_network(tmp_path):
    rundir = _finished(tmp_path)
    for key in ("model.compile=true", "model.channels_last=true", "data.workers=3", "train.epochs=9"):
        check_resumable(autolr.load_recipe("quickstart", [*TINY, key]), rundir.path)
    with pytest.raises(AutolrError, match="model.drop_top = 1 here, 0 in the run"):
        check_resumable(autolr.load_recipe("quickstart", [*TINY, "model.drop_top=1"]), rundir.path)


def test_the_initial_scores_alone_are_no_progress_and_go_with_the_folder(tmp_path):
    recipe = autolr.load_recipe("quickstart", TINY)
    rundir = RunDir.open(recipe, output=tmp_path / "run", resume=False, overwrite=False)
    rundir.save_initial_metrics({"recall@1": 0.5})
    (rundir.path / "run.log").write_text("started\n")
    assert not rundir.has_progress()
    rundir.remove()
    assert not (tmp_path / "run").exists()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "epoch-0001.pt").write_text("")
    assert RunDir(tmp_path / "run", recipe).has_progress()


def test_a_failure_of_any_kind_before_the_first_epoch_leaves_no_folder(tmp_path, monkeypatch):
    from autolr.train import loop

    def broken(trainer):  # as a fixed-size model fed the wrong size does, inside timm
        raise AssertionError("Input height (16) doesn't match model (224).")

    monkeypatch.setattr(loop, "evaluate", broken)
    with pytest.raises(AssertionError):
        autolr.run(autolr.load_recipe("quickstart", [*TINY, "data.workers=0"]), output=tmp_path / "run")
    assert not (tmp_path / "run").exists()


class _Rank:
    """A stand-in accelerator for one rank of two: collectives answered as the main process would."""

    def __init__(self, main: bool):
        self.num_processes, self.is_main_process = 2, main


def _collectives(monkeypatch, main_value, gathered):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", lambda box: main_value(box))
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda mine: gathered)


def test_only_the_main_process_reads_and_its_errors_reach_every_rank(monkeypatch):
    sent = []
    _collectives(monkeypatch, lambda box: sent.append(box) or box, None)
    assert main_reads(_Rank(main=True), lambda: 7) == 7 and sent == [[("ok", 7)]]

    def never():
        raise AssertionError("a non-main rank must not read the run folder")

    _collectives(monkeypatch, lambda box: [("ok", 7)], None)
    assert main_reads(_Rank(main=False), never) == 7
    _collectives(monkeypatch, lambda box: [("error", "--resume: no run")], None)
    with pytest.raises(AutolrError, match="--resume: no run"):
        main_reads(_Rank(main=False), never)


def test_a_rank_that_cannot_see_the_checkpoint_receives_it_from_the_main_process(tmp_path, monkeypatch):
    ckpt = tmp_path / "epoch-0001.pt"
    torch.save({"w": torch.ones(2)}, ckpt)
    size = ckpt.stat().st_size
    _collectives(monkeypatch, lambda box: [("ok", size)], [size, size])
    assert torch.equal(load_shared(_Rank(main=False), ckpt)["w"], torch.ones(2))  # a shared folder: read it
    sent = {"w": torch.full((2,), 3.0)}
    monkeypatch.setattr(rundir_module, "main_reads", lambda acc, read: size)  # the size the main process saw
    _collectives(monkeypatch, lambda box: [sent], [size, None])  # then its copy of the file
    ckpt.unlink()  # this rank is on another node: the file is not here
    assert load_shared(_Rank(main=False), ckpt) is sent


def test_resume_state_is_new_in_an_empty_folder(tmp_path):
    recipe = autolr.load_recipe("quickstart", TINY)
    rundir = RunDir.open(recipe, output=tmp_path / "run", resume=True, overwrite=False)
    assert rundir.resume_state(recipe) == "new"


@pytest.mark.parametrize("n", [120, 5864, 4072, 1437, 4099])
def test_split_batches_give_one_process_steps_per_epoch(n):
    """The per-process batch over 2 or 4 ranks gives the epoch the steps of the global batch on one, for
    plain and class-balanced batches (the 2-process launch in test_ddp_modes.py checks a real run)."""
    from autolr.data.sampler import ClassBalancedBatchSampler, EpochSampler

    labels = [i % 12 for i in range(n)]
    one = len(ClassBalancedBatchSampler(labels, 4, 40, 0, 0, 1))
    for world in (2, 4):
        assert len(EpochSampler(n, 0, True, 0, world)) // per_process_batch(40, world) == n // 40
        shards = [list(EpochSampler(n, 0, True, rank, world)) for rank in range(world)]
        assert len({len(s) for s in shards}) == 1 and len({i for s in shards for _, i in s}) == len(shards[0]) * world
    balanced = ClassBalancedBatchSampler(labels, 4, per_process_batch(40, 2, samples_per_class=4), 0, 0, 2)
    assert len(balanced) == one == n // 40
