"""Layer-wise pruning (Algorithm 1, method.md section 4): how many top blocks to drop.

The paper fine-tunes the full network with one LR, then restarts from the pretrained weights with one
more top block removed, while the score does not drop; p pruned blocks cost p + 2 fine-tunes. Here
every candidate trains on the training classes minus the validation split and is scored on that split
(`prune.estimator = "full"`), so the test split never selects anything.

`prune.estimator = "heads"` estimates the same curve from ONE training: the full network with a
training head at every candidate cut (the pooled output of each block that could become the top one),
trained jointly on the mean of their losses, then each cut scored on the validation split.

Each candidate is a selection run in `RUN_DIR/prune/<name>/`; a finished one (its metrics.json) is read
back instead of retrained, so an interrupted search resumes where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autolr import fileio
from autolr.errors import AutolrError
from autolr.model import RetrievalNet
from autolr.recipe import Recipe
from autolr.rundir import RunDir, main_reads

log = logging.getLogger("autolr")


def choose_depth(score: Callable[[int], float], max_depth: int, max_drop: float = 0.0) -> int:
    """Algorithm 1's rule: cut one more block while the score falls by at most `max_drop` from the last
    kept depth. `score(d)` is called lazily, in order 0, 1, 2, ... and stops at the first drop, so a search
    that keeps p blocks' cut costs p + 2 calls (p + 1 when it reaches `max_depth`)."""
    chosen, kept = 0, score(0)
    for depth in range(1, max_depth + 1):
        s = score(depth)
        if s < kept - max_drop:
            break
        chosen, kept = depth, s
    return chosen


def search_depth(recipe: Recipe, accelerator, rundir: RunDir) -> tuple[Recipe, dict[str, Any]]:
    """Run the search in `rundir/prune/`; returns the recipe at the chosen depth and the `prune.*` metrics."""
    cfg = recipe.prune
    num_blocks = _num_blocks(recipe)
    deepest = num_blocks - 2  # AutoLR needs 2 blocks; a retrieval net with 1 block left is not a search
    max_depth = cfg.max_depth or deepest
    if max_depth > deepest:
        raise AutolrError(
            f"prune.max_depth = {cfg.max_depth}: {recipe.model.name} has {num_blocks} blocks and at least 2 must"
            f" stay, so the deepest cut is {deepest}: lower prune.max_depth (0 = the deepest)"
        )
    if recipe.model.drop_top:
        log.info("prune.mode = 'search' chooses the depth: model.drop_top = %d is not used", recipe.model.drop_top)
    metric = _metric_name(recipe)
    log.info("pruning search (%s estimator) on the validation split: %s, cuts 0..%d of %d blocks",
             cfg.estimator, metric, max_depth, num_blocks)
    candidates: dict[int, dict[str, Any]] = {}
    if cfg.estimator == "full":
        def score(depth: int) -> float:
            candidates[depth] = _train_candidate(recipe, accelerator, rundir, depth, metric)
            return candidates[depth]["score"]

        depth = choose_depth(score, max_depth, cfg.max_drop)
        trainings = len(candidates)
    else:
        candidates = _train_heads(recipe, accelerator, rundir, max_depth, metric)
        depth = choose_depth(lambda d: candidates[d]["score"], max_depth, cfg.max_drop)
        trainings = 1
    for d, c in sorted(candidates.items()):
        c["chosen"] = d == depth
        _log_candidate(rundir, {"kind": "prune_candidate", "drop_top": d, "metric": metric,
                                "estimator": cfg.estimator, **c}, accelerator.is_main_process)
    seconds = round(sum(c["seconds"] for c in candidates.values()) if cfg.estimator == "full"
                    else next(iter(candidates.values()))["seconds"], 2)  # the heads share one training
    _print_candidates(candidates, metric, depth, cfg.estimator) if accelerator.is_main_process else None
    log.info("pruning search chose drop_top = %d (%d training(s), %.0f s)", depth, trainings, seconds)
    final = recipe.model_copy(deep=True)
    final.model.drop_top = depth
    metrics = {
        "prune.mode": "search",
        "prune.estimator": cfg.estimator,
        "prune.metric": metric,
        "prune.depth": depth,
        "prune.trainings": trainings,
        "prune.seconds": seconds,
        "prune.candidates": [{"drop_top": d, **c} for d, c in sorted(candidates.items())],
    }
    return final, metrics


def _num_blocks(recipe: Recipe) -> int:
    import timm

    from autolr.adapters import get_adapter

    net = timm.create_model(recipe.model.name.split(".")[0], pretrained=False, num_classes=0)
    return len(get_adapter(recipe.model.name).block_map(net).blocks)


def _metric_name(recipe: Recipe) -> str:
    if recipe.prune.metric != "auto":
        return recipe.prune.metric
    return "accuracy" if recipe.data.name in ("cifar10", "cifar100") else "recall@1"


def search_recipe(recipe: Recipe, depth: int) -> Recipe:
    """A candidate: the recipe cut at `depth`, trained with the single-LR search schedule."""
    c = recipe.model_copy(deep=True)
    c.prune.mode = "fixed"
    c.model.drop_top = depth
    c.train.schedule = recipe.prune.schedule
    c.train.epochs = recipe.prune.epochs or recipe.train.epochs
    c.eval.every = 0
    c.output.log_with = []
    return c


def _open(recipe: Recipe, path: Path, accelerator) -> tuple[RunDir, dict[str, Any] | None]:
    """A candidate's folder, opened by the main process alone, and its saved metrics if it finished
    (sent to every rank, so that all of them skip or train it alike)."""
    def on_main() -> dict[str, Any] | None:
        sub = RunDir.open(recipe, output=path, resume=path.is_dir(), overwrite=False)
        return sub.read_metrics() if sub.finished() else None

    return RunDir(path, recipe), main_reads(accelerator, on_main)


def _train_candidate(recipe: Recipe, accelerator, rundir: RunDir, depth: int, metric: str) -> dict[str, Any]:
    """One full fine-tune at `depth` on the validation protocol, or its saved result."""
    from autolr.train.loop import train_and_evaluate

    c = search_recipe(recipe, depth)
    sub, metrics = _open(c, rundir.path / "prune" / f"drop-{depth}", accelerator)
    if metrics is not None:
        log.info("pruning search: drop_top = %d already trained (%s %.4f)", depth, metric, metrics.get(metric, float("nan")))
    else:
        log.info("pruning search: training drop_top = %d", depth)
        metrics = train_and_evaluate(c, accelerator, sub, selection=True)
    if metric not in metrics:
        found = ", ".join(k for k, v in metrics.items() if isinstance(v, float))
        raise AutolrError(f"prune.metric = {metric!r} is not a score this run reports ({found}): pick one of those")
    return {"score": metrics[metric], "seconds": metrics["wall_time"]}


# -- the one-training estimator --------------------------------------------------------------------

class CutHeadsNet(RetrievalNet):
    """The full network plus a training head on the pooled output of each block that a cut of
    1..max_depth blocks would make the top one. `forward` returns every head's logits (deepest first:
    cut 0, 1, ...); `cut_features` the pooled features that each cut would embed."""

    def __init__(self, backbone: nn.Module, num_classes: int, model_name: str, max_depth: int, size: int):
        super().__init__(backbone, num_classes)
        from autolr.model import block_outputs

        outputs = block_outputs(backbone, model_name)
        self.cut_modules = [outputs[len(outputs) - 1 - d] for d in range(1, max_depth + 1)]  # cut d's top block
        self._nhwc = getattr(backbone, "output_fmt", "NCHW") == "NHWC"
        self._seen: dict[str, torch.Tensor] = {}
        for name in self.cut_modules:
            backbone.get_submodule(name).register_forward_hook(self._keep(name))
        with torch.no_grad():  # the width of each cut, from one small forward pass
            was = backbone.training
            backbone.eval()
            widths = [f.shape[1] for f in self.cut_features(torch.zeros(1, 3, size, size))[1:]]
            backbone.train(was)
        hidden = self.head[0].out_features
        self.cut_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(w, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.1), nn.Dropout(0.5),
                          nn.Linear(hidden, num_classes))
            for w in widths
        )

    def _keep(self, name: str):
        def hook(module, inputs, output):
            self._seen[name] = output
        return hook

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x.mean(dim=(1, 2) if self._nhwc else (2, 3))
        return x.mean(dim=1) if x.dim() == 3 else x  # tokens: their mean

    def cut_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._seen.clear()
        full = self.embed(x)
        feats = [full, *(self._pool(self._seen[n]) for n in self.cut_modules)]
        self._seen.clear()  # no activations kept alive past the step
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.cut_features(x)
        return [self.head(feats[0]), *(h(f) for h, f in zip(self.cut_heads, feats[1:], strict=True))]

    def head_parameters(self):
        return [*self.head.parameters(), *self.cut_heads.parameters()]


def _mean_cross_entropy(outputs: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    return torch.stack([F.cross_entropy(o, labels) for o in outputs]).mean()


def _train_heads(recipe: Recipe, accelerator, rundir: RunDir, max_depth: int, metric: str) -> dict[int, dict]:
    """One joint training with a head per cut; every cut scored on the validation split."""
    from autolr.data.transforms import build_transforms
    from autolr.train.loop import fit, setup

    c = search_recipe(recipe, 0)
    sub, saved = _open(c, rundir.path / "prune" / "heads", accelerator)
    if saved is not None:
        log.info("pruning search: the cut heads were already trained")
        return {int(d): v for d, v in saved["cuts"].items()}
    log.info("pruning search: training the full network with heads at cuts 0..%d", max_depth)

    def make_net(backbone, num_classes):
        size = build_transforms(c.data, backbone.pretrained_cfg)[2]
        return CutHeadsNet(backbone, num_classes, c.model.name, max_depth, size)

    trainer = setup(c, accelerator, sub, selection=True, make_net=make_net)
    trainer.loss_fn = _mean_cross_entropy
    fit(trainer)
    scores = score_cuts(trainer, metric)
    seconds = round(sub.wall_time(), 2)
    cuts = {d: {"score": s, "seconds": seconds} for d, s in enumerate(scores)}
    if trainer.is_main:
        sub.save_metrics({"split": "val", "metric": metric, "cuts": cuts, "wall_time": seconds})
        sub.drop_checkpoints()
    accelerator.free_memory()
    return cuts


@torch.no_grad()
def score_cuts(trainer, metric: str) -> list[float]:
    """`metric` of every cut on the evaluation split: Recall@K / MAP@R of its pooled features, or the
    accuracy of its head (classification)."""
    from autolr.eval.metrics import recall_and_map, top_k_accuracy
    from autolr.train.accel import gather_in_order

    acc, model = trainer.accelerator, trainer.model
    loader = trainer.eval_loaders["test"]
    model.eval()
    per_cut: list[list[torch.Tensor]] | None = None
    labels = []
    with acc.autocast():
        for x, y in loader:
            x = x.to(acc.device, non_blocking=True)
            if trainer.task == "classification":
                outs = [o.float() for o in model(x)]
            else:
                outs = [f.float() for f in model.cut_features(x)]
                if trainer.recipe.eval.flip:
                    outs = [o + f.float() for o, f in zip(outs, model.cut_features(torch.flip(x, dims=[3])), strict=True)]
            per_cut = [[o] for o in outs] if per_cut is None else [p + [o] for p, o in zip(per_cut, outs, strict=True)]
            labels.append(y.to(acc.device))
    model.train()
    n = len(loader.dataset)
    y = gather_in_order(acc, torch.cat(labels), n)
    scores = []
    for chunks in per_cut:  # each cut scored like a run's evaluation: the same metric names
        rows = gather_in_order(acc, torch.cat(chunks), n)
        if trainer.task == "classification":
            found = top_k_accuracy(rows, y)
        else:
            recalls, mapr = recall_and_map(rows, y, trainer.recall_at)
            found = {**{f"recall@{k}": v for k, v in recalls.items()}, "map@r": mapr}
        if metric not in found:
            raise AutolrError(f"prune.metric = {metric!r} is not a score this run reports ({', '.join(found)}):"
                              " pick one of those")
        scores.append(round(found[metric], 6))
    return scores


def _log_candidate(rundir: RunDir, row: dict[str, Any], main: bool) -> None:
    """One `prune_candidate` row per depth in the run's log.jsonl, also across resumes."""
    if not main:
        return
    seen = {(r.get("kind"), r.get("drop_top")) for r in fileio.read_jsonl(rundir.path / "log.jsonl")}
    if ("prune_candidate", row["drop_top"]) not in seen:
        rundir.log(row)


def _print_candidates(candidates: dict[int, dict], metric: str, depth: int, estimator: str) -> None:
    from rich.table import Table

    from autolr.console import console

    shared = estimator == "heads"  # one training scored every cut: its cost is not per row
    title = f"pruning search ({estimator}): {metric} on the validation split"
    if shared:
        title += f"; one training, {next(iter(candidates.values()))['seconds']:.0f} s"
    table = Table(title=title)
    for col in ("drop_top", metric, *(() if shared else ("seconds",)), ""):
        table.add_column(col, justify="right")
    for d, c in sorted(candidates.items()):
        cost = () if shared else (f"{c['seconds']:.0f}",)
        table.add_row(str(d), f"{100 * c['score']:.2f}", *cost, "chosen" if d == depth else "")
    console().print(table)
