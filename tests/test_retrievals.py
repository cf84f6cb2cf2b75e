"""The retrieval grid: its neighbours are Recall@K's own ranking (ties by gallery index), its queries a
seeded mix of Recall@1 hits and misses; `autolr run`/`report` draw it, `autolr eval --retrievals` too."""

import io
import json
from contextlib import redirect_stdout

import pytest
import torch
from _fake_datasets import make_imagefolder, make_inshop
from PIL import Image

import autolr
from autolr.cli import main
from autolr.data import protocol
from autolr.eval import embed as embed_module
from autolr.eval.metrics import nearest_neighbours, recall_at_k
from autolr.report import retrievals
from autolr.report.retrievals import Grid, Row, draw_grid, make_grid, pick_queries

TINY = [
    "model.name=test_resnet", "data.image_size=16", "data.workers=0", "data.batch_size=64", "eval.batch_size=512",
    "train.epochs=1", "train.schedule='constant'", "eval.recall_at=[1,2,4]",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread per module


def recall_from(idx, query_labels, gallery_labels, ks):
    hits = gallery_labels[idx] == query_labels[:, None]
    return {k: int(hits[:, :k].any(1).sum()) / len(query_labels) for k in ks}


def tied():
    """12 items in 3 exact-tie groups whose labels alternate: any tie order but the index order changes
    Recall@1 and Recall@2."""
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0.6, 0.8, 0]]).repeat_interleave(4, 0)
    return x, torch.tensor([0, 1, 0, 2, 1, 1, 2, 0, 2, 2, 0, 1])


def test_neighbours_are_ranked_by_similarity_then_gallery_index():
    x, labels = tied()
    idx, sims = nearest_neighbours(x, 5)
    for i in range(len(x)):
        s = (x[i] @ x.T).tolist()
        order = sorted((j for j in range(len(x)) if j != i), key=lambda j: (-s[j], j))[:5]
        assert idx[i].tolist() == order
    assert torch.allclose(sims, (x[:, None, :] * x[idx]).sum(-1))
    assert recall_from(idx, labels, labels, [1, 2, 3]) == recall_at_k(x, labels, [1, 2, 3])
    reversed_ties = recall_from(idx.flip(1)[:, 1:], labels, labels, [1, 2])  # the test can tell orders apart
    assert reversed_ties != recall_at_k(x, labels, [1, 2])
    assert torch.equal(nearest_neighbours(x, 5, chunk_size=2)[0], idx)


def test_the_ranking_matches_recall_at_k_on_the_symmetric_path_and_against_a_gallery():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4200, 4, generator=gen).round(decimals=1)  # 4+ panels: the symmetric path, ties galore
    labels = torch.randint(0, 40, (4200,), generator=gen)
    idx, _ = nearest_neighbours(x, 8)
    assert recall_from(idx, labels, labels, [1, 2, 4, 8]) == recall_at_k(x, labels, [1, 2, 4, 8])
    q, ql = x[:50], labels[:50]
    idx, sims = nearest_neighbours(q, 3, x[50:])
    ref = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(x[50:], dim=1).T
    assert torch.equal(idx, ref.sort(dim=1, descending=True, stable=True)[1][:, :3])
    assert recall_from(idx, ql, labels[50:], [1, 3]) == recall_at_k(q, ql, [1, 3], x[50:], labels[50:])


def test_queries_are_a_seeded_mix_of_hits_then_misses():
    hits = [i % 3 == 0 for i in range(30)]  # 10 hits, 20 misses
    chosen = pick_queries(hits, 8, seed=0)
    assert chosen == pick_queries(hits, 8, seed=0) != pick_queries(hits, 8, seed=1)
    assert [hits[i] for i in chosen] == [True] * 4 + [False] * 4 and len(set(chosen)) == 8
    few_misses = [True] * 9 + [False]
    assert [few_misses[i] for i in pick_queries(few_misses, 6, 0)] == [True] * 5 + [False]  # topped up
    assert pick_queries([True, False], 8, 0) == [0, 1]


def test_grid_rows_are_the_ranking_and_in_shop_neighbours_come_from_the_gallery():
    x, labels = tied()
    grid = make_grid({"test": (x, labels)}, k=4, n=6, seed=3)
    idx, sims = nearest_neighbours(x, 4)
    assert grid.query_split == grid.gallery_split == "test" and grid.k == 4 and len(grid.rows) == 6
    for row in grid.rows:
        assert row.neighbours == idx[row.query].tolist() and row.labels == labels[idx[row.query]].tolist()
        assert row.hit == (labels[idx[row.query, 0]] == labels[row.query]).item()
    q, ql, g, gl = x[:5], labels[:5], x[5:], labels[5:]
    grid = make_grid({"query": (q, ql), "gallery": (g, gl)}, k=3, n=5, seed=0)
    idx, _ = nearest_neighbours(q, 3, g)
    assert (grid.query_split, grid.gallery_split) == ("query", "gallery")
    assert {r.query: r.neighbours for r in grid.rows} == {i: idx[i].tolist() for i in range(5)}


def test_borders_are_green_for_the_same_class_and_names_show(tmp_path):
    from autolr.data.build import make_split  # noqa: PLC0415 - the same builder every dataset uses

    images = [Image.new("RGB", (12, 10), (40 * i, 0, 0)) for i in range(4)]
    split = make_split(images, [0, 0, 1, 1], ["Black_footed_Albatross", "Laysan_Albatross"])
    grid = Grid("test", "test", 2, [Row(0, 0, [1, 2], [0, 1], [0.9, 0.5]), Row(3, 1, [2, 0], [1, 0], [0.8, 0.1])])
    fig = draw_grid(grid, {"test": split}, "title")
    axes = fig.axes
    colours = [ax.spines["top"].get_edgecolor()[:3] for ax in axes]
    from matplotlib.colors import to_rgb

    green, red, blue = to_rgb("tab:green"), to_rgb("tab:red"), to_rgb("tab:blue")
    assert colours == [blue, green, red, blue, green, red]
    assert [ax.get_title() for ax in axes[:3]] == ["query: R@1 hit", "#1  0.900", "#2  0.500"]
    assert axes[0].get_xlabel() == "Black footed Albatross" and axes[2].get_xlabel() == "Laysan Albatross"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """`autolr run quickstart`, tiny (test_resnet at 16 px on digits, one epoch): it ends with a report."""
    out = tmp_path_factory.mktemp("retrievals") / "run"
    return autolr.run(autolr.load_recipe("quickstart", TINY), output=out).run_dir


def test_a_run_ends_with_a_grid_of_recall_at_ks_own_neighbours(run_dir, tmp_path):
    report = run_dir / "report"
    with Image.open(report / "retrievals.png") as im:
        assert im.format == "PNG" and im.width > 400 and im.height > 400
    assert "(retrievals.png)" in (report / "summary.md").read_text()
    saved = json.loads((report / "retrievals.json").read_text())["grid"]
    assert saved["k"] == 4 and len(saved["rows"]) == 8  # k = max(eval.recall_at) = 4
    assert main(["embed", str(run_dir), "--output", str(tmp_path / "e.safetensors"), "--device", "cpu"]) == 0
    from autolr.eval.embed import read_embeddings

    q, ql = read_embeddings(tmp_path / "e.safetensors").part("test")
    idx, _ = nearest_neighbours(q, 4)
    for row in saved["rows"]:
        assert row["neighbours"] == idx[row["query"]].tolist()  # the same ranking, the same tie order
        assert row["labels"] == ql[idx[row["query"]]].tolist() and row["label"] == ql[row["query"]]
    hits = (ql[idx[:, 0]] == ql).float().mean().item()
    assert hits == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["recall@1"], abs=1e-6)
    assert [r["labels"][0] == r["label"] for r in saved["rows"]] == [True] * 4 + [False] * 4


def test_report_redraws_the_grid_from_its_cache(run_dir, monkeypatch):
    before = (run_dir / "report" / "retrievals.json").read_text()

    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded again")

    monkeypatch.setattr(embed_module, "embed_splits", no_embedding)
    with redirect_stdout(io.StringIO()):
        assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "retrievals.json").read_text() == before
    assert "retrievals.png" not in (run_dir / "report" / "summary.md").read_text().split("Not drawn")[-1]


def test_eval_draws_the_grid_for_another_dataset_and_in_shop_uses_its_gallery(run_dir, tmp_path, monkeypatch, capsys):
    fake = make_imagefolder(tmp_path, per_class=3)
    assert main(["eval", str(run_dir), "--data", "imagefolder", "--root", str(fake.folder), "--retrievals", "3",
                 "--device", "cpu"]) == 0
    assert str(run_dir / "report" / "retrievals-imagefolder.png") in capsys.readouterr().out
    with Image.open(run_dir / "report" / "retrievals-imagefolder.png") as im:
        assert im.format == "PNG"
    shop = make_inshop(tmp_path, items=3, per_item=4)
    monkeypatch.setitem(protocol.KNOWN_SIZES, "inshop", shop.sizes)
    drawn = {}
    real = retrievals.draw_grid
    monkeypatch.setattr(retrievals, "draw_grid", lambda grid, splits, title: drawn.update(grid=grid, splits=splits) or real(grid, splits, title))
    assert main(["eval", str(run_dir), "--data", "inshop", "--root", str(shop.folder), "--retrievals", "2",
                 "--device", "cpu"]) == 0
    grid = drawn["grid"]
    assert (grid.query_split, grid.gallery_split) == ("query", "gallery")
    assert all(j < len(drawn["splits"]["gallery"]) for r in grid.rows for j in r.neighbours)


def test_retrievals_must_be_a_positive_count(run_dir, capsys):
    assert main(["eval", str(run_dir), "--retrievals", "0", "--device", "cpu"]) == 2
    assert "--retrievals" in capsys.readouterr().err
