"""Retrieval metrics: Recall@K and MAP@R on cosine similarity, chunked so memory stays bounded.

Ranking rule (both metrics): descending similarity, equal similarities ordered by gallery index, so the
results are deterministic. All-vs-all (no gallery) excludes each query's own item by position.
Never builds an N x N matrix: queries are scored in chunks on the embeddings' own device.

Speed: the similarity matmul is most of the cost. All-vs-all uses its symmetry: each row panel is
multiplied only with itself and the items after it, and the transposed part offers the later rows
their candidates, which halves the FLOPs (faiss's `IndexFlatIP` computes all of them). Top-k by
`torch.topk` on the k + 1 best (no full sort); `recall_and_map` scores both metrics from one pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

_CHUNK_BYTES = 256 * 2**20  # similarity-matrix memory per chunk
_STATE_BYTES = 256 * 2**20  # all-vs-all keeps top-k's for the rows to come: above this cap, the plain path
_PANEL_ROWS = 1024  # all-vs-all panel height: FLOPs are (1/2 + rows / 2N) of the full product


def recall_at_k(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    ks: Iterable[int],
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Fraction of queries with a same-label item among their K nearest neighbours, for each K."""
    ks = _check_ks(ks, _gallery_size(query, gallery))
    return _score(query, query_labels, ks, gallery, gallery_labels, chunk_size, with_map=False)[0]


def map_at_r(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> float:
    """Mean average precision at R (Musgrave et al. 2020), R = the query's number of relevant items.

    Queries with no relevant item (R = 0) are left out of the mean.
    """
    return _score(query, query_labels, [], gallery, gallery_labels, chunk_size, with_map=True)[1]


def recall_and_map(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    ks: Iterable[int],
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> tuple[dict[int, float], float]:
    """`recall_at_k` and `map_at_r` from one similarity pass (half the time of calling both)."""
    ks = _check_ks(ks, _gallery_size(query, gallery))
    return _score(query, query_labels, ks, gallery, gallery_labels, chunk_size, with_map=True)


def nearest_neighbours(
    query: torch.Tensor,
    k: int,
    gallery: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's k nearest gallery items and their cosine similarities, ranked exactly as Recall@K
    ranks them (descending similarity, ties by gallery index; all-vs-all leaves each query's own item out).

    Returns (indices [n, k], similarities [n, k]); k is clipped to the items there are.
    """
    own = gallery is None
    q = F.normalize(query.float(), dim=1)
    g = q if own else F.normalize(gallery.float().to(q.device), dim=1)
    k = min(int(k), _gallery_size(q, None if own else g))
    if k < 1 or not len(q):
        empty = torch.zeros((len(q), 0), device=q.device)
        return empty.long(), empty
    tops, sims = [], []
    for start, top in _ranked(q, g, own, k, chunk_size):
        tops.append(top)
        sims.append(torch.einsum("bd,bkd->bk", q[start : start + len(top)], g[top]))  # [b, k, d]: bounded per chunk
    return torch.cat(tops), torch.cat(sims)


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Classification: top-1 ("accuracy") and top-5 ("accuracy@5") of the logits' ranking."""
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hit = top == labels[:, None].to(top.device)
    return {"accuracy": round(hit[:, 0].float().mean().item(), 6), "accuracy@5": round(hit.any(1).float().mean().item(), 6)}


def _check_ks(ks: Iterable[int], n_gallery: int) -> list[int]:
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if max(ks) > n_gallery:
        warnings.warn(f"Recall@K: K larger than the {n_gallery} retrievable items is clipped to {n_gallery}", stacklevel=3)
    return ks


def _gallery_size(query: torch.Tensor, gallery: torch.Tensor | None) -> int:
    return len(gallery) if gallery is not None else len(query) - 1


def _score(query, query_labels, ks, gallery, gallery_labels, chunk_size, with_map) -> tuple[dict[int, float], float]:
    """Recall@K for each k in `ks` (clipped to the gallery) and, when asked, MAP@R; one host sync."""
    own = gallery is None
    q = F.normalize(query.float(), dim=1)
    g = q if own else F.normalize(gallery.float().to(q.device), dim=1)
    ql = query_labels.to(q.device)
    gl = ql if own else gallery_labels.to(q.device)
    r = _relevant_counts(ql, gl, own)
    clipped = [min(k, _gallery_size(q, None if own else g)) for k in ks]
    depth = max([*clipped, int(r.max()) if with_map and len(r) else 0])
    if depth == 0:
        return {k: 0.0 for k in ks}, 0.0
    hits = torch.zeros(len(ks), dtype=torch.long, device=q.device)
    ap_sums = []  # per chunk, added up on the host in float64 (no float64 on every device)
    cut = torch.tensor(clipped, device=q.device)
    for start, top in _ranked(q, g, own, depth, chunk_size):
        rel = gl[top] == ql[start : start + len(top), None]  # [b, depth]: is the i-th ranked item relevant
        first = torch.where(rel.any(1), rel.byte().argmax(1), depth)  # rank of the first relevant item
        hits += (first[:, None] < cut[None, :]).sum(0)
        if with_map:
            ap_sums.append(_average_precision(rel, r[start : start + len(top)]).sum())
    counted = int((r > 0).sum())
    recalls = {k: h / len(q) for k, h in zip(ks, hits.tolist(), strict=True)}
    ap_sum = sum(torch.stack(ap_sums).tolist()) if ap_sums else 0.0
    return recalls, (ap_sum / counted if counted else 0.0)


def _relevant_counts(ql: torch.Tensor, gl: torch.Tensor, own: bool) -> torch.Tensor:
    """R per query: the gallery items sharing its label (its own item not counted)."""
    if own:
        _, inverse, counts = ql.unique(return_inverse=True, return_counts=True)
        return counts[inverse] - 1
    _, inverse = torch.cat([gl, ql]).unique(return_inverse=True)
    in_gallery = torch.bincount(inverse[: len(gl)], minlength=int(inverse.max()) + 1)
    return in_gallery[inverse[len(gl) :]]


def _average_precision(rel: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """AP@R per row (0 where R = 0) from the relevance of the ranked list's first max(R) items."""
    rel = rel.float()
    ranks = torch.arange(1, rel.shape[1] + 1, device=rel.device)
    within = ranks[None, :] <= r[:, None]
    precision = rel.cumsum(1) / ranks
    return (precision * rel * within).sum(1) / r.clamp(min=1)


def _ranked(q, g, own, depth, chunk_size) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, gallery indices of each row's `depth` best items in exact ranking order) per chunk.

    The candidates are the top depth + 1 by value (ties in any order); sorted by (-value, index) their
    first `depth` are exact unless the value at the cut continues past it: those rare rows are re-ranked
    with a full stable sort.
    """
    available = len(g) - own
    extra = min(depth + 1, available)
    rows = chunk_size or max(1, min(_PANEL_ROWS, _CHUNK_BYTES // (4 * len(g))))
    slots = min(16, _STATE_BYTES // (12 * extra * len(q)))  # waiting top-k's: values + indices per item
    # symmetric when it saves enough (4+ panels) and at least 2 slots fit
    if own and 4 * rows <= len(q) and slots >= 2:
        chunks = _symmetric_candidates(q, extra, rows, slots)
    else:
        chunks = _candidates(q, g, own, extra, chunk_size)
    for start, vals, idx in chunks:
        if bool((vals[:, 1:] == vals[:, :-1]).any()):  # ties among the candidates: restore the index order
            idx, order = idx.sort(dim=1)  # order by (-value, index): sort by index, then stable sort by value
            vals, order = vals.gather(1, order).sort(dim=1, descending=True, stable=True)
            idx = idx.gather(1, order)
        top = idx[:, :depth]
        if extra > depth:
            tied = (vals[:, depth - 1] == vals[:, depth]).nonzero().flatten()
            step = max(1, _CHUNK_BYTES // (4 * len(g)))
            for part in tied.split(step) if len(tied) else ():  # bounded memory even if every row ties
                top[part] = _exact_top(q, g, own, start + part, depth)
        yield start, top


def _candidates(q, g, own, k, chunk_size) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Each query chunk against the whole gallery: (first row, top-k values, their indices)."""
    step = chunk_size or max(1, _CHUNK_BYTES // (4 * max(len(g), 1)))
    buffer = q.new_empty(min(step, len(q)) * len(g))
    for start in range(0, len(q), step):
        sims = _similarities(q[start : start + step], g, buffer)
        if own:
            sims.diagonal(start).fill_(-torch.inf)  # entries (i, start + i): each row's own item
        vals, idx = sims.topk(k, dim=1)
        yield start, vals, idx


def _symmetric_candidates(x, k, rows, slots) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """All-vs-all top-k computing only the upper triangle of x @ x.T, one row panel at a time.

    A panel's rows are scored against themselves and the later items; what the earlier items offer them
    waits in `slots` (each earlier panel's top-k per later item, stored columnwise so that writing it is
    a plain copy), folded into one slot when all are used.
    """
    n = len(x)
    col_vals = x.new_full((slots * k, n), -torch.inf)  # slot s holds rows s*k .. s*k + k - 1
    col_idx = torch.zeros((slots * k, n), dtype=torch.long, device=x.device)
    used = 0
    buffer = x.new_empty(min(rows, n) * n)
    for i0 in range(0, n, rows):
        i1 = min(i0 + rows, n)
        sims = _similarities(x[i0:i1], x[i0:], buffer)  # [b, n - i0]
        sims.diagonal().fill_(-torch.inf)  # entries (i, i): own items
        vals, idx = sims.topk(min(k, sims.shape[1]), dim=1)
        waiting = slice(0, used * k)  # the slots written so far
        top_vals, pos = torch.cat([vals, col_vals[waiting, i0:i1].T], 1).topk(k, dim=1)
        top_idx = torch.cat([idx + i0, col_idx[waiting, i0:i1].T], 1).gather(1, pos)
        if i1 < n:  # the transposed block: these rows seen from the later items
            if used == slots:
                used = _fold_slots(col_vals[:, i1:], col_idx[:, i1:], k)
            vals, idx = sims[:, i1 - i0 :].topk(min(k, i1 - i0), dim=0)
            col_vals[used * k : used * k + len(vals), i1:] = vals
            col_idx[used * k : used * k + len(vals), i1:] = idx + i0
            used += 1
        yield i0, top_vals, top_idx


def _fold_slots(vals: torch.Tensor, idx: torch.Tensor, k: int) -> int:
    """Keep the top k of all slots in slot 0 and empty the others; returns the slots now used (1)."""
    top, pos = vals.topk(k, dim=0)
    top_idx = idx.gather(0, pos)
    vals.fill_(-torch.inf)
    vals[:k], idx[:k] = top, top_idx
    return 1


def _similarities(a: torch.Tensor, b: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """a @ b.T written into the front of a reused buffer (fresh large allocations cost page faults)."""
    return torch.mm(a, b.T, out=buffer[: len(a) * len(b)].view(len(a), len(b)))


def _exact_top(q, g, own, rows, depth) -> torch.Tensor:
    """The careful path for rows tied at the cut: their full similarity rows, stably sorted."""
    sims = q[rows] @ g.T
    if own:
        sims[torch.arange(len(rows), device=sims.device), rows] = -torch.inf
    return sims.sort(dim=1, descending=True, stable=True)[1][:, :depth]
