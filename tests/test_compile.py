"""model.compile round trip: a compiled run's model, checkpoints and exports carry no `_orig_mod.` keys, so
`autolr eval`, `load_model`, `model.checkpoint = RUN` and a resume without compile all work."""

import io
import json
from contextlib import redirect_stdout

import pytest
import torch
from _fake_datasets import make_cub
from safetensors import safe_open

import autolr
from autolr.cli import main
from autolr.model import RetrievalNet, create_backbone, load_model
from autolr.recipe import ModelConfig

TINY = [  # a fake CUB of 4 + 4 classes x 4 images: the run costs seconds, the compile is the rest
    "model.name=test_resnet", "data.name=cub200", "data.image_size=16", "data.workers=0", "data.batch_size=8",
    "data.strict_counts=false", "eval.batch_size=64", "train.epochs=1", "train.schedule='constant'",
    "train.lr=0.01", "eval.recall_at=[1,2]",
]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine, two threads contend and run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_unwrapping_a_compiled_model_leaves_the_wrapper_as_it_was():
    """accelerate's default (keep_torch_compile=True) rebinds the compiled wrapper's `_orig_mod` to the bare
    net, dropping the DDP module under it: its no_sync then skips nothing. DataParallel stands for DDP."""
    from accelerate import Accelerator

    from autolr.train.loop import Trainer

    net = RetrievalNet(create_backbone(ModelConfig(name="test_resnet", pretrained=False)), num_classes=3)
    parallel = torch.nn.DataParallel(net)
    compiled = torch.compile(parallel)  # lazy: nothing compiles until it is called
    trainer = Trainer(None, Accelerator(cpu=True), compiled, None, None, {}, [], None)
    assert trainer.model is net
    assert compiled._orig_mod is parallel
    assert not [k for k in trainer.model.state_dict() if k.startswith(("_orig_mod.", "module."))]


def test_a_compiled_run_evaluates_reloads_and_resumes_without_compile(tmp_path, monkeypatch):
    # dynamo's "eager" backend: the same OptimizedModule wrapper (what put `_orig_mod.` in the keys) without
    # inductor's minutes of CPU code generation; tests/test_loop.py compiles with inductor itself
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_(model, **{"backend": "eager", **kw}))
    out = tmp_path / "run"
    root = make_cub(tmp_path / "data", classes=4, per_class=4, size=(32, 24)).folder
    data = [f"data.root={json.dumps(str(root))}", f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    try:
        result = autolr.run(autolr.load_recipe("quickstart", [*TINY, *data, "model.compile=true"]), output=out)
    finally:
        torch._dynamo.reset()
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert not [k for k in f.keys() if k.startswith("_orig_mod.")]
    checkpoint = torch.load(sorted((out / "checkpoints").glob("epoch-*.pt"))[-1], weights_only=True)
    assert not [k for k in checkpoint["model"] if k.startswith("_orig_mod.")]

    with redirect_stdout(io.StringIO()) as printed:
        assert main(["eval", str(out), "--json", "--device", "cpu"]) == 0
    scored = json.loads(printed.getvalue())
    for key in ("recall@1", "recall@2", "map@r"):
        assert scored[key] == pytest.approx(result.metrics[key], abs=1e-4)

    net = load_model(out)
    assert net.embed(torch.zeros(2, 3, 16, 16)).shape == (2, net.backbone.num_features)
    again = create_backbone(ModelConfig(name="test_resnet", pretrained=False, checkpoint=str(out)))
    for key, value in net.backbone.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value)

    # the checkpoint of the compiled run continues in an eager model (model.compile may change on resume)
    assert main(["run", str(out / "recipe.toml"), "--resume", "--output", str(out),
                 "--set", "train.epochs=2", "--set", "model.compile=false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2
