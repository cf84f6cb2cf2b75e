"""Retrieval metrics: Recall@K and MAP@R on cosine similarity, chunked so memory stays bounded.

Ranking rule (both metrics): descending similarity, equal similarities ordered by gallery index, so the
results are deterministic. All-vs-all (no gallery) excludes each query's own item by position.
Never builds an N x N matrix: queries are scored in chunks on the embeddings' own device.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

_CHUNK_BYTES = 256 * 2**20  # similarity-matrix memory per chunk


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
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    n_gallery = _gallery_size(query, gallery)
    clipped = {k: min(k, n_gallery) for k in ks}
    if any(c != k for k, c in clipped.items()):
        warnings.warn(f"Recall@K: K larger than the {n_gallery} retrievable items is clipped to {n_gallery}", stacklevel=2)
    hits = {k: 0 for k in ks}
    for sims, same in _chunks(query, query_labels, gallery, gallery_labels, chunk_size):
        kmax = max(clipped.values())
        top = _ranked_top(sims, kmax)
        same_top = same.gather(1, top)
        for k, c in clipped.items():
            hits[k] += int(same_top[:, :c].any(1).sum())
    return {k: hits[k] / len(query) for k in ks}


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
    total, counted = 0.0, 0
    for sims, same in _chunks(query, query_labels, gallery, gallery_labels, chunk_size):
        r = same.sum(1)
        rmax = int(r.max()) if len(r) else 0
        if rmax == 0:
            continue
        rel = same.gather(1, _ranked_top(sims, rmax)).float()  # [b, rmax]
        ranks = torch.arange(1, rmax + 1, device=rel.device)
        within = ranks[None, :] <= r[:, None]
        precision = rel.cumsum(1) / ranks
        ap = (precision * rel * within).sum(1) / r.clamp(min=1)
        keep = r > 0
        total += float(ap[keep].sum())
        counted += int(keep.sum())
    return total / counted if counted else 0.0


def _gallery_size(query: torch.Tensor, gallery: torch.Tensor | None) -> int:
    return len(gallery) if gallery is not None else len(query) - 1


def _chunks(query, query_labels, gallery, gallery_labels, chunk_size) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(similarities, same-label mask) for consecutive query chunks; self-matches set to -inf."""
    q = F.normalize(query.float(), dim=1)
    own = gallery is None
    g = q if own else F.normalize(gallery.float().to(q.device), dim=1)
    gl = (query_labels if own else gallery_labels).to(q.device)
    ql = query_labels.to(q.device)
    step = chunk_size or max(1, _CHUNK_BYTES // (4 * max(len(g), 1)))
    for start in range(0, len(q), step):
        sims = q[start : start + step] @ g.T
        same = ql[start : start + step, None] == gl[None, :]
        if own:
            rows = torch.arange(len(sims), device=q.device)
            sims[rows, rows + start] = -torch.inf
            same[rows, rows + start] = False
        yield sims, same


def _ranked_top(sims: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the top k per row, ties broken by lower index, exactly (also at the k boundary)."""
    k = min(k, sims.shape[1])
    extra = min(k + 1, sims.shape[1])
    vals, idx = sims.topk(extra, dim=1)  # descending; order among equal values is unspecified
    # within the candidates, order by (-value, index): sort by index, then stable sort by value
    idx, order = idx.sort(dim=1)
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    idx = idx.gather(1, order)
    if extra == k:  # every item is a candidate: nothing outside can tie
        return idx
    tied = vals[:, k - 1] == vals[:, k]  # the boundary value continues past k: the tie-break matters
    out = idx[:, :k].clone()
    if tied.any():
        out[tied] = _exact_top(sims[tied], k)
    return out


def _exact_top(sims: torch.Tensor, k: int) -> torch.Tensor:
    """The careful path for rows tied at the boundary: a full stable sort (rare rows only)."""
    order = torch.arange(sims.shape[1], device=sims.device).expand_as(sims)
    _, perm = sims.sort(dim=1, descending=True, stable=True)
    return order.gather(1, perm)[:, :k]
