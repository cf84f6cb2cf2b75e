"""Recall@K and MAP@R against a brute-force reference: random data, ties, tiny sets, chunking.

All-vs-all scoring has two paths (the symmetric upper-triangle one, and plain query chunks when the
running top-k would not fit): the `path` fixture runs a test on both.
"""

import pytest
import torch
import torch.nn.functional as F

from autolr.eval import metrics
from autolr.eval.metrics import map_at_r, recall_and_map, recall_at_k


@pytest.fixture(params=["symmetric", "plain"])
def path(request, monkeypatch):
    if request.param == "plain":
        monkeypatch.setattr(metrics, "_STATE_BYTES", 0)
    else:  # one-row panels: every all-vs-all set of 4+ items takes the symmetric path
        monkeypatch.setattr(metrics, "_PANEL_ROWS", 1)
    return request.param


def ranking(q, g, own):
    """Brute force: full similarity matrix, python stable sort by (-sim, index)."""
    sims = F.normalize(q.float(), dim=1) @ F.normalize(g.float(), dim=1).T
    rows = []
    for i, row in enumerate(sims.tolist()):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        rows.append([j for j in order if not (own and j == i)])
    return rows


def ref_recall(q, ql, ks, g=None, gl=None):
    own = g is None
    g, gl = (q, ql) if own else (g, gl)
    ranks = ranking(q, g, own)
    return {k: sum(any(gl[j] == ql[i] for j in r[:k]) for i, r in enumerate(ranks)) / len(q) for k in ks}


def ref_map(q, ql, g=None, gl=None):
    own = g is None
    g, gl = (q, ql) if own else (g, gl)
    aps = []
    for i, r in enumerate(ranking(q, g, own)):
        rel = [int(gl[j] == ql[i]) for j in r]
        R = sum(rel)
        if R == 0:
            continue
        hits, ap = 0, 0.0
        for pos in range(R):
            if rel[pos]:
                hits += 1
                ap += hits / (pos + 1)
        aps.append(ap / R)
    return sum(aps) / len(aps)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_gallery", [False, True])
def test_random_data_matches_brute_force(seed, with_gallery, path):
    g = torch.Generator().manual_seed(seed)
    q, ql = torch.randn(40, 6, generator=g), torch.randint(0, 5, (40,), generator=g)
    gal = (torch.randn(30, 6, generator=g), torch.randint(0, 5, (30,), generator=g)) if with_gallery else (None, None)
    ks = [1, 2, 4, 8, 16]
    assert recall_at_k(q, ql, ks, *gal) == pytest.approx(ref_recall(q, ql, ks, *gal))
    assert map_at_r(q, ql, *gal) == pytest.approx(ref_map(q, ql, *gal))


def test_ties_at_the_boundary_follow_gallery_index(path):
    # query 0 sees items 1..4 all at the same similarity; only item 4 shares its label
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([7, 1, 2, 3, 7])
    r = recall_at_k(q, labels, [1, 2, 3, 4])
    # query 0 ranks 1,2,3,4: hit only at K=4; query 4 ranks 0,1,2,3: hit at K=1; others never
    assert r == {1: 1 / 5, 2: 1 / 5, 3: 1 / 5, 4: 2 / 5}
    assert r == pytest.approx(ref_recall(q, labels, [1, 2, 3, 4]))


@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_duplicates_and_all_equal_embeddings(chunk, path):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 4, generator=g)
    q = base[torch.tensor([0, 0, 1, 1, 2, 2, 3, 4, 5, 5, 5, 0])]
    ql = torch.randint(0, 3, (12,), generator=g)
    for x in (q, torch.ones(12, 4)):
        assert recall_at_k(x, ql, [1, 2, 3, 5], chunk_size=chunk) == pytest.approx(ref_recall(x, ql, [1, 2, 3, 5]))
        assert map_at_r(x, ql, chunk_size=chunk) == pytest.approx(ref_map(x, ql))


@pytest.mark.parametrize("chunk", [None, 16, 50])
def test_many_panels_uneven_classes_and_duplicates(chunk, path):
    # classes of 1 to 12 items (R = 0 for the singletons), duplicated rows tied across panels
    g = torch.Generator().manual_seed(5)
    sizes = torch.tensor([1, 12, 3, 1, 7, 9, 2, 5, 11, 4, 6, 8, 1, 10, 5, 3, 7, 9, 4, 6, 2, 12, 8, 5])
    labels = torch.repeat_interleave(torch.arange(len(sizes)) * 7 - 20, sizes)  # sparse, negative labels
    x = torch.randn(len(labels), 3, generator=g)
    x[torch.randperm(len(x), generator=g)[:40]] = x[:40].clone()  # many exact duplicates
    perm = torch.randperm(len(x), generator=g)
    x, labels = x[perm], labels[perm]
    ks = [1, 3, 10, 30]
    assert recall_at_k(x, labels, ks, chunk_size=chunk) == pytest.approx(ref_recall(x, labels, ks))
    assert map_at_r(x, labels, chunk_size=chunk) == pytest.approx(ref_map(x, labels))


@pytest.mark.parametrize("with_gallery", [False, True])
def test_recall_and_map_in_one_pass_equal_the_separate_calls(with_gallery, path):
    g = torch.Generator().manual_seed(2)
    q, ql = torch.randn(60, 8, generator=g), torch.randint(0, 6, (60,), generator=g)
    gal = (torch.randn(45, 8, generator=g), torch.randint(0, 8, (45,), generator=g)) if with_gallery else (None, None)
    recalls, map_r = recall_and_map(q, ql, [1, 5, 20], *gal, chunk_size=16)
    assert recalls == recall_at_k(q, ql, [1, 5, 20], *gal)
    assert map_r == pytest.approx(map_at_r(q, ql, *gal), abs=1e-6)


def test_query_labels_missing_from_the_gallery_are_left_out_of_map():
    q, g = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.7, 0.7]])
    # query 0 (label 3) has R = 1 and finds it first; query 1 (label 9) has no relevant item
    assert map_at_r(q, torch.tensor([3, 9]), g, torch.tensor([3, 4, 4])) == 1.0
    assert recall_at_k(q, torch.tensor([3, 9]), [1, 3], g, torch.tensor([3, 4, 4])) == {1: 0.5, 3: 0.5}


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunking_does_not_change_results(chunk, path):
    g = torch.Generator().manual_seed(1)
    q, ql = torch.randn(25, 5, generator=g), torch.randint(0, 4, (25,), generator=g)
    assert recall_at_k(q, ql, [1, 4], chunk_size=chunk) == recall_at_k(q, ql, [1, 4])
    assert map_at_r(q, ql, chunk_size=chunk) == pytest.approx(map_at_r(q, ql))


def test_tiny_sets():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert recall_at_k(q, torch.tensor([0, 0]), [1]) == {1: 1.0}
    assert recall_at_k(q, torch.tensor([0, 1]), [1]) == {1: 0.0}
    q3 = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert recall_at_k(q3, torch.tensor([0, 1, 0]), [1, 2]) == {1: 0.0, 2: pytest.approx(2 / 3)}


def test_map_at_r_by_hand():
    # query 0: R = 2 relevant (items 2 and 3); ranked list 1 (sim .99, wrong), 2 (right), 3 (right)
    q = torch.tensor([[1.0, 0.0], [0.99, 0.141], [0.9, 0.436], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 0])
    # query 0 ranking: 1, 2, 3 -> top R=2: [wrong, right] -> AP = (1/2)/2 = 0.25
    # query 2 (R=2: items 0, 3): ranking 1, 0, 3 -> [wrong, right] -> 0.25
    # query 3 (R=2: 0, 2): ranking 2, 1, 0 -> [right, wrong] -> 0.5 ; query 1 has R = 0: left out
    assert map_at_r(q, labels) == pytest.approx((0.25 + 0.25 + 0.5) / 3)


def test_large_k_is_clipped_with_one_warning():
    q, ql = torch.randn(5, 3), torch.tensor([0, 0, 1, 1, 2])
    with pytest.warns(UserWarning, match="clipped to 4") as record:
        r = recall_at_k(q, ql, [1, 10, 100])
    assert len(record) == 1
    assert r[10] == r[100] == 0.8  # everyone but the lone class-2 item finds its partner in 4


def test_query_vs_gallery_excludes_nothing():
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert recall_at_k(q, torch.tensor([5]), [1], g, torch.tensor([5, 6])) == {1: 1.0}


def test_the_path_fixture_selects_the_path(path, monkeypatch):
    calls = []
    symmetric = metrics._symmetric_candidates
    monkeypatch.setattr(metrics, "_symmetric_candidates", lambda *a: calls.append(1) or symmetric(*a))
    recall_at_k(torch.randn(10, 3), torch.arange(10) % 3, [1])
    assert bool(calls) == (path == "symmetric")


def test_a_tiny_memory_budget_gives_the_same_results(path, monkeypatch):
    # 1-row chunks everywhere, the all-tied fallback included
    monkeypatch.setattr(metrics, "_CHUNK_BYTES", 1)
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 4, (20,), generator=g)
    for x in (torch.randn(20, 5, generator=g), torch.ones(20, 5)):
        assert recall_at_k(x, labels, [1, 3, 7]) == pytest.approx(ref_recall(x, labels, [1, 3, 7]))
        assert map_at_r(x, labels) == pytest.approx(ref_map(x, labels))
