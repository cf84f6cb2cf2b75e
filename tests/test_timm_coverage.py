"""A broad sample of `timm.list_models()`: every trainable parameter in exactly one of stem/block/head.

Two passes. Coverage: the smallest-named model of every name family, built with `pretrained=False` on
the meta device (structure only, no memory, no weight init), each under a time budget. Truncation: a
seeded handful of the small covered models, built for real on CPU, cut by one block (`drop_top=1`) and
run forward at a small input, each under its own budget; over-budget models are skipped, and said.

Run as a script for the report: `python tests/test_timm_coverage.py [--per-family N] [--seed S]`.
"""

from __future__ import annotations

import random
import re
import signal
import sys
import time
from contextlib import contextmanager

import pytest
import timm
import torch
from autolr.adapters import get_adapter, split_parameters

from autolr.errors import AutolrError

SKIP = re.compile(r"(giant|gigantic|huge|large|xlarge|xxl|_g_|_e_|_h_|_l_|_bigg|_7b|_so400m|_1b|xxlarge|sam2|_6b|_\d+b_)")
SIZES = ("atto", "femto", "pico", "nano", "tiny", "xxs", "xs", "mini", "small", "s", "lite", "light", "base")
META_BUDGET_S = 3.0  # per model, structure only
REAL_BUDGET_S = 10.0  # per model: build, cut and forward on CPU
MAX_REAL_PARAMS = 8_000_000  # larger models are not built for real here
REAL_MODELS = 5
INPUT = 64


class OverBudget(BaseException):  # not an Exception: timm's own `except Exception` must not swallow it
    pass


@contextmanager
def time_limit(seconds: float):
    """Interrupt the block after `seconds` (SIGALRM: the main thread, between Python bytecodes)."""

    def stop(signum, frame):
        raise OverBudget(f"over the {seconds:g} s budget")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def size_key(name: str) -> tuple:
    """Sorts likely-small variants first: a size word (atto < tiny < small < base), then the first number."""
    words = re.split(r"[_.]", name)
    rank = min((SIZES.index(w) for w in words if w in SIZES), default=len(SIZES))
    number = re.search(r"\d+", name)
    return rank, int(number.group()) if number else 0, len(name), name


def sample(per_family: int = 1) -> list[str]:
    """The `per_family` smallest-named models of each name family (the name up to its first `_` or digit)."""
    families: dict[str, list[str]] = {}
    for name in timm.list_models():
        if not SKIP.search(name):
            families.setdefault(re.split(r"[_\d]", name, maxsplit=1)[0], []).append(name)
    return sorted(n for names in families.values() for n in sorted(names, key=size_key)[:per_family])


def check(name: str) -> tuple[str | None, int]:
    """(None when covered, else the reason; the trainable parameter count), from a meta-device build."""
    try:
        with time_limit(META_BUDGET_S), torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=0)
    except OverBudget as e:
        return f"skip (timm build {e})", 0
    except Exception as e:  # a model timm itself cannot build here (extra deps, sizes)
        return f"skip (timm build: {type(e).__name__})", 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    params = sum(p.numel() for p in trainable)
    try:
        with time_limit(META_BUDGET_S):
            bmap = get_adapter(name).block_map(model)
    except OverBudget as e:
        return f"skip (block map {e})", params
    except Exception as e:
        return f"no block map: {str(e)[:100]}", params
    parts = split_parameters(model, bmap)
    if parts["unassigned"]:
        return f"unassigned: {', '.join(parts['unassigned'][:3])}", params
    if len(bmap.blocks) < 2:
        return f"only {len(bmap.blocks)} block", params
    counted = sum(len(b) for b in parts["blocks"]) + len(parts["stem"]) + len(parts["head"])
    if counted != len(trainable):
        return "a parameter counted twice", params
    return None, params


def report(names: list[str]) -> dict[str, tuple[str | None, int]]:
    return {name: check(name) for name in names}


def cut_and_run(name: str) -> str | None:
    """Build for real, cut the top block, run forward + backward at a small input. None when it works;
    "skip (...)" when over budget; otherwise what went wrong (a clear `AutolrError` included)."""
    torch.manual_seed(0)
    try:
        with time_limit(REAL_BUDGET_S):
            model = timm.create_model(name, pretrained=False, num_classes=0)
            width = get_adapter(name).truncate(model, 1)
            size = INPUT if _takes_any_size(model) else model.pretrained_cfg["input_size"][-1]
            emb = model.forward_head(model.forward_features(torch.randn(2, 3, size, size)), pre_logits=True)
            emb.square().mean().backward()
    except OverBudget as e:
        return f"skip ({e})"
    except AutolrError as e:
        return f"cannot be cut: {e}" if "valid:" in str(e) else f"unclear error: {e}"
    expected = (2, getattr(model, "head_hidden_size", None) or width)
    if tuple(emb.shape) != expected or not torch.isfinite(emb).all():
        return f"embedding {tuple(emb.shape)}, expected {expected}"
    return None


def _takes_any_size(model) -> bool:
    """Whether the model runs at INPUT px (ViT-style models are built for one size)."""
    try:
        model.eval()
        with torch.no_grad():
            model.forward_features(torch.zeros(1, 3, INPUT, INPUT))
        return True
    except Exception:
        return False
    finally:
        model.train()


def real_sample(results: dict[str, tuple[str | None, int]], k: int = REAL_MODELS, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded handful of covered models small enough to build for real, and those too large."""
    covered = sorted(n for n, (reason, _) in results.items() if reason is None)
    small = [n for n in covered if results[n][1] <= MAX_REAL_PARAMS]
    return random.Random(seed).sample(small, min(k, len(small))), [n for n in covered if n not in small]


@pytest.fixture(scope="module")
def coverage() -> dict[str, tuple[str | None, int]]:
    return report(sample())


def test_sampled_timm_models_are_covered(coverage, capsys):
    built = {n: r for n, (r, _) in coverage.items() if not (r or "").startswith("skip")}
    skipped = {n: r for n, (r, _) in coverage.items() if (r or "").startswith("skip")}
    failed = {n: r for n, r in built.items() if r is not None}
    generic = [n for n in built if get_adapter(n).family == "generic"]
    generic_ok = [n for n in generic if built[n] is None]
    with capsys.disabled():
        print(f"\ntimm coverage: {len(built) - len(failed)}/{len(built)} sampled models covered"
              f" ({len(skipped)} not built here); generic adapter handles {len(generic_ok)}/{len(generic)}")
        for n, r in {**failed, **skipped}.items():
            print(f"  {n}: {r}")
    assert len(built) >= 100  # the sample stays broad
    assert not {n: r for n, r in failed.items() if get_adapter(n).family != "generic"}
    assert len(generic_ok) >= 0.9 * len(generic)


@pytest.fixture
def one_thread():
    """One torch thread: on 2 shared cores, two threads per tiny conv cost more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_seeded_handful_cut_and_run_for_real(coverage, one_thread, capsys):
    names, large = real_sample(coverage)
    results = {n: cut_and_run(n) for n in names}
    with capsys.disabled():
        print(f"\ntimm truncation (drop_top=1, {INPUT} px, CPU): {', '.join(names)};"
              f" {len(large)} covered models over {MAX_REAL_PARAMS:,} parameters not built")
        for n, r in results.items():
            print(f"  {n}: {r or 'ok'}")
    assert len(names) == REAL_MODELS
    assert not {n: r for n, r in results.items() if r is not None and not r.startswith(("skip", "cannot be cut"))}
    if all((r or "").startswith("skip") for r in results.values()):
        pytest.skip(f"every model went over its {REAL_BUDGET_S:g} s budget: this machine is too busy to tell")


def test_time_limit_interrupts_and_is_not_swallowed():
    start = time.time()
    with pytest.raises(OverBudget):
        with time_limit(0.2):
            try:
                while True:
                    pass
            except Exception:  # what timm's own handlers do
                pass
    assert time.time() - start < 2


if __name__ == "__main__":
    per = int(sys.argv[sys.argv.index("--per-family") + 1]) if "--per-family" in sys.argv else 1
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
    res = report(sample(per))
    print(f"{sum(r is None for r, _ in res.values())}/{len(res)} covered")
    for n, (r, _) in res.items():
        if r is not None:
            print(f"{n}: {r}")
    chosen, _ = real_sample(res, seed=seed)
    for n in chosen:
        print(f"{n} drop_top=1: {cut_and_run(n) or 'ok'}")
