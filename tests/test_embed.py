"""`autolr embed`: a run's embeddings as safetensors + JSON, and Recall@K recomputed from them."""

import io
import json
from contextlib import redirect_stdout

import pytest
import torch
from _fake_datasets import make_imagefolder
from PIL import Image
from safetensors.torch import load_file

import autolr
from autolr.cli import main
from autolr.eval.embed import read_embeddings, score_embeddings

TINY = [
    "model.name=test_resnet", "data.image_size=16", "data.workers=0", "data.batch_size=64", "eval.batch_size=512",
    "train.epochs=1", "train.schedule='constant'", "eval.recall_at=[1,2,4]",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread per module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """`autolr run quickstart`, tiny: test_resnet at 16 px on digits, one epoch, flip on."""
    out = tmp_path_factory.mktemp("embed") / "run"
    return autolr.run(autolr.load_recipe("quickstart", TINY), output=out).run_dir


def run_cli(*args):
    with redirect_stdout(io.StringIO()) as out:
        code = main([str(a) for a in args])
    return code, out.getvalue()


def test_recall_recomputed_from_the_export_equals_the_runs(run_dir, tmp_path):
    out = tmp_path / "e.safetensors"
    code, printed = run_cli("embed", run_dir, "--data", "digits", "--output", out, "--device", "cpu")
    assert code == 0 and str(out) in printed and str(tmp_path / "e.json") in printed
    emb, metrics = read_embeddings(out), json.loads((run_dir / "metrics.json").read_text())
    scores = score_embeddings(emb, [1, 2, 4])
    for k in ("recall@1", "recall@2", "recall@4"):
        assert scores[k] == metrics[k]  # the same embeddings, the same ranking: exactly
    assert scores["map@r"] == pytest.approx(metrics["map@r"], abs=1e-6)
    tensors = load_file(str(out))
    assert set(tensors) == {"embeddings", "labels"} and tensors["embeddings"].dtype == torch.float32
    assert torch.allclose(tensors["embeddings"].norm(dim=1), torch.ones(len(tensors["labels"])), atol=1e-5)
    side = json.loads((tmp_path / "e.json").read_text())
    assert side["parts"] == {"test": [0, 896]} and side["flip"] is True and side["class_names"] == list("56789")
    assert side["items"][:3] == [0, 1, 2]  # digits live inside the dataset: row indices, not paths
    assert side["model"] == "test_resnet" and side["dim"] == tensors["embeddings"].shape[1]


def test_image_files_and_folders_are_embedded_unlabelled_in_order(run_dir, tmp_path):
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    for name, size in (("b.png", (20, 24)), ("sub/a.jpg", (30, 18))):
        Image.fromarray((torch.rand(size[1], size[0], 3) * 255).byte().numpy()).save(folder / name)
    single = tmp_path / "one.png"
    Image.fromarray((torch.rand(16, 16) * 255).byte().numpy()).save(single)  # greyscale: read as RGB
    out = tmp_path / "files.safetensors"
    assert run_cli("embed", run_dir, single, folder, "--output", out, "--device", "cpu", "--no-flip")[0] == 0
    emb = read_embeddings(out)
    assert emb.items == [str(single), str(folder / "b.png"), str(folder / "sub" / "a.jpg")]
    assert emb.labels.tolist() == [-1, -1, -1] and emb.meta["flip"] is False
    net = autolr.load_model(run_dir)
    from autolr.eval.saved import eval_transform, load_saved

    test_tf, _ = eval_transform(net, load_saved(run_dir).recipe)
    with torch.no_grad():
        one = torch.nn.functional.normalize(net.embed(test_tf(Image.open(single).convert("RGB"))[None]), dim=1)
    assert torch.allclose(emb.embeddings[0], one[0], atol=1e-5)
    with pytest.raises(autolr.AutolrError, match="unlabelled"):
        score_embeddings(emb, [1])


def test_an_archive_gives_file_paths_and_any_split(run_dir, tmp_path):
    fake = make_imagefolder(tmp_path, per_class=2)
    out = tmp_path / "train.safetensors"
    code, _ = run_cli("embed", run_dir, "--data", "imagefolder", "--root", fake.folder, "--split", "train",
                      "--output", out, "--device", "cpu")
    assert code == 0
    emb = read_embeddings(out)
    assert emb.parts == {"train": [0, 8]} and sorted(emb.items) == sorted(str(f) for f in fake.files[:8])
    assert emb.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and emb.meta["class_names"] == ["a", "b", "c", "d"]


@pytest.mark.parametrize("args,message", [
    (["--data", "digits", "--split", "val"], "--split 'val': digits has the splits test, train"),
    (["--output", "e.npy"], "name a .safetensors file"),
    (["nowhere.jpg"], "nowhere.jpg: no such image file or folder"),
    (["x.jpg", "--data", "digits"], "either image files/folders or --data"),
])
def test_embed_mistakes_exit_2(run_dir, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.jpg").write_bytes(b"")
    base = ["embed", str(run_dir), "--device", "cpu"] + ([] if "--output" in args else ["--output", "e.safetensors"])
    assert main(base + args) == 2
    assert message in " ".join(capsys.readouterr().err.split())
