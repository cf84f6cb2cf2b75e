"""The retrieval grid (`report/retrievals.png`): what a fine-tuned model retrieves, as papers show it.

Each row is one test query, then its top-K neighbours (K = the largest `eval.recall_at`, at most 8) in
the order Recall@K ranks them: `nearest_neighbours` of the metrics module, the same code and the same
tie order (equal similarities by gallery index). A green border marks the query's class, red another;
each neighbour shows its cosine similarity and, where the dataset names its classes, the class. The
queries are a seeded choice (`train.seed`), half where Recall@1 succeeds and half where it fails (one
kind tops up the other when it runs short). In-shop's neighbours come from its gallery.

Drawing needs the model and the data: the rows chosen are kept in `report/retrievals.json`, tied to
the model file and the settings, so a later `autolr report` draws them again without embedding the
test split anew (it still reads the shown images from the dataset).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets
    import torch

MAX_K = 8  # neighbours per row: more do not fit a page
ROWS = 8  # query rows in the report's grid
CACHE = "retrievals.json"


@dataclass
class Row:
    """One query (its index in the query split) and its ranked neighbours (indices in the gallery)."""

    query: int
    label: int
    neighbours: list[int]
    labels: list[int]
    similarities: list[float]

    @property
    def hit(self) -> bool:
        """Recall@1 succeeds: the first neighbour shares the query's label."""
        return bool(self.labels) and self.labels[0] == self.label


@dataclass
class Grid:
    query_split: str  # "test" (all-vs-all) or "query" (In-shop: neighbours from "gallery")
    gallery_split: str
    k: int
    rows: list[Row] = field(default_factory=list)


def grid_k(recall_at: list[int]) -> int:
    """Neighbours per row: the largest K the run reports, at most MAX_K."""
    return max(1, min(max(recall_at), MAX_K))


def make_grid(embedded: dict[str, tuple[torch.Tensor, torch.Tensor]], k: int, n: int, seed: int) -> Grid:
    """The grid's rows from the embedded evaluation split(s), {"test"} or {"query", "gallery"}."""
    from autolr.eval.metrics import nearest_neighbours

    qs, gs = ("query", "gallery") if "query" in embedded else ("test", "test")
    (q, ql), (g, gl) = embedded[qs], embedded[gs]
    idx, sims = nearest_neighbours(q, k, None if qs == gs else g)
    gl, ql = gl.to(idx.device), ql.to(idx.device)
    hits = (gl[idx[:, 0]] == ql).tolist() if idx.shape[1] else [False] * len(q)
    rows = [Row(i, int(ql[i]), idx[i].tolist(), gl[idx[i]].tolist(), [round(s, 4) for s in sims[i].tolist()])
            for i in pick_queries(hits, n, seed)]
    return Grid(qs, gs, idx.shape[1], rows)


def pick_queries(hits: list[bool], n: int, seed: int) -> list[int]:
    """Half successes, half failures (the other kind tops up a short one), seeded; successes first."""
    rng = random.Random(seed)
    good = [i for i, h in enumerate(hits) if h]
    bad = [i for i, h in enumerate(hits) if not h]
    n_bad = min(len(bad), max(n // 2, n - len(good)))
    n_good = min(len(good), n - n_bad)
    return sorted(rng.sample(good, n_good)) + sorted(rng.sample(bad, n_bad))


def draw_grid(grid: Grid, splits: dict[str, datasets.Dataset], title: str):
    """The figure: one row per query, the query then its neighbours, bordered by correctness."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    queries, gallery = splits[grid.query_split], splits[grid.gallery_split]
    name_q, name_g = _namer(queries), _namer(gallery)
    width, height = 1.5 * (grid.k + 1), 1.8 * len(grid.rows) + 0.85
    fig = Figure(figsize=(width, height))  # a fixed layout: constrained layout costs seconds at 72 axes
    FigureCanvasAgg(fig)  # no pyplot: leaves a user's backend alone
    axes = fig.subplots(len(grid.rows), grid.k + 1, squeeze=False,
                        gridspec_kw={"left": 0.1 / width, "right": 1 - 0.1 / width, "bottom": 0.25 / height,
                                     "top": 1 - 0.8 / height, "wspace": 0.12, "hspace": 0.42})
    for ax_row, row in zip(axes, grid.rows, strict=True):
        _cell(ax_row[0], _thumb(queries, row.query), "tab:blue", f"query: R@1 {'hit' if row.hit else 'miss'}",
              name_q(row.label))
        for rank, (ax, j, label, s) in enumerate(zip(ax_row[1:], row.neighbours, row.labels, row.similarities, strict=False), 1):
            colour = "tab:green" if label == row.label else "tab:red"
            _cell(ax, _thumb(gallery, j), colour, f"#{rank}  {s:.3f}", name_g(label))
        for ax in ax_row[1 + len(row.neighbours):]:
            ax.set_visible(False)
    fig.suptitle(title, fontsize=9, y=1 - 0.1 / height, va="top")
    return fig


def _cell(ax, image, colour: str, top: str, bottom: str | None) -> None:
    ax.imshow(image, interpolation="nearest" if max(image.size) < 64 else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)
    ax.set_title(top, fontsize=7.5, color="black" if colour == "tab:blue" else colour)
    if bottom:
        ax.set_xlabel(bottom, fontsize=7)


def _thumb(split: datasets.Dataset, index: int, side: int = 128):
    image = split[int(index)]["image"].convert("RGB")
    image.thumbnail((side, side))
    return image


def _namer(split: datasets.Dataset):
    """label -> its class name (shortened), or None where the dataset names no classes."""
    names = getattr(split.features["label"], "names", None)
    return (lambda label: _short(names[label])) if names else (lambda label: None)


def _short(name: str, width: int = 22) -> str:
    name = name.replace("_", " ")
    return name if len(name) <= width else name[: width - 1] + "…"


def _title(model: str, dataset: str, grid: Grid) -> str:
    hits = sum(r.hit for r in grid.rows)
    where = "from the gallery" if grid.query_split == "query" else "all-vs-all"
    return (f"{model} on {dataset}: {len(grid.rows)} seeded test queries ({hits} Recall@1 hits, "
            f"{len(grid.rows) - hits} misses)\nand their top {grid.k} neighbours ({where}) with cosine similarity;"
            " green: same class, red: another")


# -- from a run folder --------------------------------------------------------------------------------------
def plot_retrievals(run) -> Any:
    """The report's grid of a finished retrieval run with a saved model (None otherwise: skipped)."""
    m = run.metrics or {}
    if m.get("split") == "val" or not any(k.startswith("recall@") for k in m):
        return None
    if not (run.path / "model.safetensors").is_file():
        return None
    grid, splits, meta = run_grid(run.path, cache=run.path / "report" / CACHE)
    return draw_grid(grid, splits, _title(meta["model"], meta["dataset"], grid))


def run_grid(path: Path, *, cache: Path | None = None, n: int = ROWS, device: str | None = None,
             data: str | None = None, root: str | None = None, hub_id: str | None = None,
             strict_counts: bool | None = None):
    """(grid, the dataset's evaluation splits, about) for a run folder (or another dataset): read from
    `cache` when it was made from this model file with these settings, else embedded afresh (and cached)."""
    from autolr.data import load_data
    from autolr.data.transforms import test_resize
    from autolr.eval.saved import eval_data_recipe, eval_transform, load_saved, pick_device

    dev = pick_device(device)
    saved = load_saved(path)
    recipe = eval_data_recipe(saved.recipe, data, root, hub_id, strict_counts)
    test_tf, size = eval_transform(saved.net, recipe)
    bundle = load_data(recipe.data, seed=recipe.train.seed, min_side=test_resize(size))
    if getattr(bundle, "task", "retrieval") == "classification":
        from autolr.errors import AutolrError

        raise AutolrError(f"--retrievals: {bundle.name} is a classification dataset; the grid needs a retrieval one")
    splits = bundle.eval_splits()
    same = recipe.data.name == saved.recipe.data.name and saved.recipe.eval.recall_at != "auto"
    recall_at = list(saved.recipe.eval.recall_at) if same else bundle.recall_at
    key = _signature(path, recipe, n, grid_k(recall_at))
    grid = _read_cache(cache, key)
    if grid is None:
        import autolr.eval.embed as eval_embed

        embedded = eval_embed.embed_splits(saved.net, splits, test_tf, device=dev, flip=saved.recipe.eval.flip,
                                           batch_size=saved.recipe.eval.batch_size, workers=recipe.data.workers,
                                           seed=recipe.train.seed, progress=True)
        grid = make_grid(embedded, grid_k(recall_at), n, recipe.train.seed)
        if cache is not None:
            from autolr.fileio import write_json

            write_json(cache, {"signature": key, "grid": asdict(grid)})
    return grid, splits, {"model": saved.model_name, "dataset": bundle.name}


def _signature(path: Path, recipe, n: int, k: int) -> dict[str, Any]:
    """What the chosen rows depend on: the model file (size, time) and the data and eval settings."""
    stat = (Path(path) / "model.safetensors").stat()
    d = recipe.data
    return {"model": [stat.st_size, stat.st_mtime_ns], "data": [d.name, d.root, d.hub_id, d.image_size, d.transform],
            "flip": recipe.eval.flip, "seed": recipe.train.seed, "rows": n, "k": k}


def _read_cache(cache: Path | None, key: dict[str, Any]) -> Grid | None:
    if cache is None or not cache.is_file():
        return None
    try:
        saved = json.loads(cache.read_text())
        if saved["signature"] != json.loads(json.dumps(key)):
            return None
        g = saved["grid"]
        return Grid(g["query_split"], g["gallery_split"], g["k"], [Row(**r) for r in g["rows"]])
    except (ValueError, KeyError, TypeError):  # a damaged or older cache: embed again
        return None


def write_eval_grid(path: str | Path, n: int, **dataset: Any) -> Path:
    """`autolr eval --retrievals N`: the grid for the dataset evaluated, into RUN_DIR/report/retrievals-<name>.png."""
    from autolr.fileio import atomic_write

    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    grid, splits, about = run_grid(Path(folder), n=n, **dataset)
    fig = draw_grid(grid, splits, _title(about["model"], about["dataset"], grid))
    out = folder / "report" / f"retrievals-{about['dataset']}.png"
    atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=110))
    return out
