"""DDP + torch.compile (2 processes, torchrun, gloo, CPU): gradient accumulation's `no_sync` still skips the
all-reduce. Unwrapping a compiled model once rebound its `_orig_mod` to the bare network, so the DDP module
under the wrapper fell out and every micro-step all-reduced (slower, not wrong). DDP's communication hook
records which micro-steps really all-reduce: with train.grad_accum = 2, only every second one may."""

import json
import textwrap

import pytest
from _torchrun import launch, torchrun

SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path

    import torch
    import torch.distributed.algorithms.ddp_comm_hooks.default_hooks as hooks

    import autolr
    from autolr.rundir import RunDir
    from autolr.train.accel import make_accelerator
    from autolr.train.loop import setup, train_one_epoch

    compile_ = torch.compile  # dynamo's eager backend: the same OptimizedModule wrapper, no code generation
    torch.compile = lambda model, **kw: compile_(model, **{"backend": "eager", **kw})
    out, accum, sets = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    recipe = autolr.load_recipe("quickstart", [*sets, f"train.grad_accum={accum}", "model.compile=true"])
    accelerator, _ = make_accelerator(recipe)
    trainer = setup(recipe, accelerator, RunDir(out / f"run-{accum}", recipe))
    ddp = trainer.net._orig_mod  # OptimizedModule(DistributedDataParallel(RetrievalNet))
    assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel), type(ddp)
    forwards, sent = [0], set()  # micro-steps so far; those whose backward all-reduced a bucket
    ddp.module.register_forward_pre_hook(lambda module, args: forwards.__setitem__(0, forwards[0] + 1))

    def counting(state, bucket):
        sent.add(forwards[0])
        return hooks.allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, counting)
    assert trainer.model is ddp.module  # the unwrap the loop does every epoch...
    stats = train_one_epoch(trainer, 0)
    assert trainer.net._orig_mod is ddp  # ...leaves the DDP module under the wrapper
    (out / f"sent-{accum}-{os.environ['RANK']}.json").write_text(json.dumps(
        {"sent": sorted(sent), "batches": len(trainer.train_loader), "steps": stats["steps"]}))
''')

TINY = ["model.name=test_resnet", "model.pretrained=false", "data.image_size=16", "data.workers=0",
        "data.batch_size=32", "eval.batch_size=256", "train.schedule='constant'"]


@pytest.mark.slow
@pytest.mark.skipif(torchrun() is None, reason="torchrun missing")
def test_no_sync_skips_the_all_reduce_of_a_compiled_ddp_model(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for accum in (1, 2):
        proc = launch(SCRIPT, [str(out), str(accum), *TINY], tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
    every, accumulated = (json.loads((out / f"sent-{a}-0.json").read_text()) for a in (1, 2))
    assert json.loads((out / "sent-2-1.json").read_text()) == accumulated  # both ranks sent alike
    batches = every["batches"]
    assert batches == accumulated["batches"] and batches >= 3 and every["steps"] == batches
    assert every["sent"] == list(range(1, batches + 1))  # without accumulation every backward sends
    # with it only the backward that ends a group of two (and the epoch's last, shorter group) sends
    assert accumulated["steps"] == -(-batches // 2)
    assert accumulated["sent"] == sorted({*range(2, batches + 1, 2), batches})
