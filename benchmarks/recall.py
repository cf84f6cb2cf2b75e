"""Time and peak memory of autolr's Recall@K and MAP@R against faiss-cpu and pytorch-metric-learning.

All-vs-all retrieval (each item queries the rest, as on CUB, Cars and SOP) for N = 1k and 10k
embeddings at d = 512 and 2048; `--full` adds N = 60k (SOP's size: minutes on 2 cores). Prints one JSON
object. faiss (`IndexFlatIP` exact search, the k neighbours both metrics need) and pml
(`AccuracyCalculator`, precision@1 + MAP@R) are measured only when importable; neither is a dependency
of autolr (`pip install faiss-cpu pytorch-metric-learning`).

    python benchmarks/recall.py [--full] [--per-class 10] [--ks 1 2 4 8]
    python benchmarks/recall.py --device cuda     # autolr and pml on the GPU (faiss-cpu stays on CPU)

What the numbers are:
- seconds: wall time of one call, normalisation included, best of 3 for N <= 2000 (one call above).
- peak_rss_mib (CPU): how far the call raised the process's peak resident memory (getrusage ru_maxrss)
  above its high-water mark after imports, data generation and a tiny warm-up. Every (case, tool)
  runs in a fresh subprocess so that one tool's high-water mark cannot hide another's. It counts
  what the process really touched (allocator slack included), not the input itself (4 N d bytes).
  On a GPU, peak_cuda_mib instead: torch.cuda.max_memory_allocated above the input's allocation.
- faiss_over_autolr: faiss seconds / autolr seconds; above 1 means autolr is faster.
Embeddings are noisy class centres (so the metrics are not ~0 and the tools can be cross-checked).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOOLS = ("autolr_recall", "autolr_map", "autolr_both", "faiss", "pml")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="also N = 60k")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--dims", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--per-class", type=int, default=10, help="items per class (R = per_class - 1)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    p.add_argument("--device", default="cpu", help="where autolr and pml score (faiss-cpu: always the CPU)")
    p.add_argument("--child", nargs=3, metavar=("TOOL", "N", "D"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        tool, n, d = args.child
        print(json.dumps(measure(tool, int(n), int(d), args.per_class, args.ks, args.device)))
        return
    import torch

    sizes = [*args.sizes, *([60000] if args.full else [])]
    tools = [t for t in args.tools if _available(t)]
    cases = [_case(n, d, tools, args) for n in sizes for d in args.dims]
    print(json.dumps({
        "benchmark": "recall",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "faiss": _version("faiss"),
        "pytorch_metric_learning": _version("pytorch_metric_learning"),
        "per_class": args.per_class,
        "ks": args.ks,
        "cases": cases,
    }))


def _case(n: int, d: int, tools: list[str], args) -> dict:
    row: dict = {"n": n, "d": d}
    for tool in tools:
        cmd = [sys.executable, __file__, "--child", tool, str(n), str(d), "--per-class", str(args.per_class),
               "--device", args.device, "--ks", *map(str, args.ks)]
        row[tool] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    if "faiss" in row:
        faiss_s = row["faiss"]["seconds"]
        row["faiss_over_autolr"] = {t: round(faiss_s / row[t]["seconds"], 2) for t in tools if t.startswith("autolr")}
    return row


def measure(tool: str, n: int, d: int, per_class: int, ks: list[int], device: str = "cpu") -> dict:
    """One tool on one case, in this (fresh) process: best-of time, peak memory rise, the metric values."""
    import torch

    x, y = _data(n, d, per_class)
    cuda = device.startswith("cuda") and tool != "faiss"
    if cuda:
        x, y = x.to(device), y.to(device)
    call = _tool(tool, ks)
    call(x[:200], y[:200])  # warm-up: thread pools, lazy imports, CUDA context; too small to raise the peak
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(3 if n <= 2000 else 1):
        start = time.perf_counter()
        values = call(x, y)
        sync()
        times.append(time.perf_counter() - start)
    if cuda:
        memory = {"peak_cuda_mib": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)}
    else:
        memory = {"peak_rss_mib": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, 1)}
    return {"seconds": round(min(times), 4), **memory, **{k: round(v, 5) for k, v in values.items()}}


def _data(n: int, d: int, per_class: int):
    """Noisy class centres, built in place so that generating them raises the memory peak no higher
    than the embeddings themselves (the baseline for peak_rss_mib)."""
    import torch

    g = torch.Generator().manual_seed(0)
    labels = torch.randperm(n, generator=g) // per_class
    centres = torch.randn(n // per_class + 1, d, generator=g)
    x = torch.randn(n, d, generator=g).mul_(0.55 * d**0.25)  # Recall@1 around 0.7-0.9: not trivial
    for start in range(0, n, 1024):
        x[start : start + 1024] += centres[labels[start : start + 1024]]
    return x, labels


def _tool(tool: str, ks: list[int]):
    """A function (embeddings, labels) -> {metric: value} that runs `tool` all-vs-all."""
    import autolr

    if tool == "autolr_recall":
        return lambda x, y: {f"recall@{k}": v for k, v in autolr.recall_at_k(x, y, ks).items()}
    if tool == "autolr_map":
        return lambda x, y: {"map@r": autolr.map_at_r(x, y)}
    if tool == "autolr_both":
        from autolr.eval.metrics import recall_and_map

        def both(x, y):
            recalls, map_r = recall_and_map(x, y, ks)
            return {**{f"recall@{k}": v for k, v in recalls.items()}, "map@r": map_r}

        return both
    if tool == "faiss":
        return lambda x, y: _faiss(x, y, ks)
    return _pml()


def _faiss(x, y, ks: list[int]) -> dict:
    """Exact inner-product search for the neighbours Recall@K and MAP@R need (k = max(K, R) + 1, self included)."""
    import faiss
    import numpy as np

    xn = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    faiss.normalize_L2(xn)
    labels = y.cpu().numpy()
    k = min(max(max(ks), int(np.bincount(labels).max()) - 1) + 1, len(xn))
    index = faiss.IndexFlatIP(xn.shape[1])
    index.add(xn)
    _, idx = index.search(xn, k)
    not_self = idx != np.arange(len(xn))[:, None]
    first = np.where(not_self[:, 0], idx[:, 0], idx[:, 1])  # the nearest other item
    return {"recall@1": float((labels[first] == labels).mean())}


def _pml():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count")

    def run(x, y):
        import torch.nn.functional as F

        x = F.normalize(x, dim=1)  # pml's default FaissKNN is L2: on unit vectors it ranks by cosine
        out = calc.get_accuracy(x, y, x, y, ref_includes_query=True)
        return {"recall@1": out["precision_at_1"], "map@r": out["mean_average_precision_at_r"]}

    return run


def _available(tool: str) -> bool:
    module = {"faiss": "faiss", "pml": "pytorch_metric_learning"}.get(tool)
    return module is None or importlib.util.find_spec(module) is not None


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), "__version__", "?")


if __name__ == "__main__":
    main()
