"""`autolr report`: every plot a run has data for and `summary.md`, into RUN_DIR/report/ (also written
at the end of every `autolr run`)."""

from __future__ import annotations

import logging
from pathlib import Path

from autolr import fileio
from autolr.report.plots import PLOTS, save_png, trial_outcome
from autolr.report.runs import Run, md_table, metric_keys, num, pct, read_run

log = logging.getLogger("autolr")


def write_report(run_dir: str | Path) -> list[Path]:
    """Draw every plot the run has data for, and `summary.md`, into RUN_DIR/report/; returns the files.

    A plot without data is skipped and one that fails is logged as a warning: the report is called at
    the end of `autolr run` and must never fail the run it describes. Both are listed in summary.md.
    """
    run = read_run(run_dir)
    out = run.path / "report"
    written, skipped = [], {}
    for name, (_, draw) in PLOTS.items():
        try:
            fig = draw(run)
            if fig is None:
                skipped[name] = "no data in this run"
                continue
            save_png(fig, out / name)
            written.append(out / name)
        except Exception as e:  # a broken plot must not lose the others, nor fail the run
            log.warning("report: could not draw %s: %s: %s", name, type(e).__name__, e)
            skipped[name] = f"failed ({type(e).__name__}: {e})"
    fileio.write_text(out / "summary.md", summary(run, [p.name for p in written], skipped))
    return [*written, out / "summary.md"]


def summary(run: Run, plots: list[str], skipped: dict[str, str]) -> str:
    """The run in Markdown: recipe highlights, test metrics before/after, epochs, trials, pruning, plots."""
    parts = [f"# {run.name}\n\nRun folder: `{run.path}`" + ("" if run.metrics else " (unfinished: no metrics.json)"),
             "## Recipe\n\n" + md_table(["", ""], _highlights(run))]
    if run.metrics:
        parts.append("## Test metrics (%)\n\n" + _final_table(run))
    sections = [("Epochs", _epoch_table), ("AutoLR trials", _trial_section), ("Depth search", _candidate_table),
                ("Pruning cycles", _cycle_table)]
    parts += [f"## {title}\n\n{text}" for title, make in sections if (text := make(run))]
    links = [f"![{PLOTS[name][0]}]({name})" for name in plots]
    parts.append("## Plots\n\n" + ("\n\n".join(links) if links else "none"))
    if skipped:
        parts.append("Not drawn:\n\n" + "\n".join(f"- `{name}`: {why}" for name, why in skipped.items()))
    return "\n\n".join(parts) + "\n"


def _highlights(run: Run) -> list[list[str]]:
    s = run.setting
    dropped = (run.metrics or {}).get("drop_top", s("model.drop_top", 0))  # a search's chosen depth
    rows = [["model", f"{s('model.name')} (pretrained: {s('model.pretrained')}), top {dropped} blocks dropped"],
            ["data", f"{s('data.name')}, image size {s('data.image_size')}, batch {s('data.batch_size')}"],
            ["training", f"{s('train.epochs')} epochs, schedule {s('train.schedule')}, lr {s('train.lr')}, "
                         f"head lr {s('train.head_lr')}, seed {s('train.seed')}"]]
    if s("prune.mode", "fixed") == "iterative":  # every cycle's LR comes from prune.lr_schedule
        rows[-1][1] = (f"{s('train.epochs')} epochs in cycle 0, then {s('prune.cycle_epochs') or s('train.epochs')}"
                       f" per cycle; every group's LR from prune.lr_schedule; seed {s('train.seed')}")
    if s("train.schedule") == "autolr" and s("prune.mode", "fixed") != "iterative":
        rows.append(["AutoLR", f"tau {s('autolr.tau')} (strict: {s('autolr.strict')}), alpha {s('autolr.alpha')}, "
                               f"beta {s('autolr.beta')}, at most {s('autolr.max_trials')} trials per epoch"])
    mode = s("prune.mode", "fixed")
    if mode == "search":
        rows.append(["pruning", f"depth search, estimator {s('prune.estimator')}, metric {s('prune.metric')}"])
    elif mode == "iterative":
        rows.append(["pruning", f"iterative, {s('prune.cycles')} cycles of {s('prune.rate')}, "
                                f"{s('prune.criterion')}, LR schedule {s('prune.lr_schedule')}"])
    if run.metrics and "wall_time" in run.metrics:
        rows.append(["wall time", f"{run.metrics['wall_time']:.0f} s"])
    return rows


def _final_table(run: Run) -> str:
    before = run.initial
    rows = []
    for key in metric_keys([run.metrics]):
        after, was = run.metrics[key], before.get(key)
        rows.append([key, pct(was), pct(after), "" if was is None else f"{100 * (after - was):+.2f}"])
    return md_table(["metric", "before", "after", "gain"], rows)


def _epoch_table(run: Run) -> str:
    rows = run.rows_of("epoch")
    tests = metric_keys([r.get("test", {}) for r in rows])[:1]
    header = ["epoch", "loss", "seconds", "images/s"]
    autolr = any("trials" in r for r in rows)
    header += ["trials", "kept", "S"] if autolr else []
    body = []
    for r in rows:
        line = [r["epoch"], num(r.get("loss")), num(r.get("seconds"), 1), num(r.get("images_per_s"), 1)]
        line += [r.get("trials", ""), r.get("kept_trial", ""), num(r.get("sorting_quality"), 3)] if autolr else []
        body.append(line + [pct(r.get("test", {}).get(k)) for k in tests])
    return md_table(header + [f"test {k} (%)" for k in tests], body) if body else ""


def _trial_section(run: Run) -> str:
    trials = run.rows_of("trial")
    if not trials:
        return ""
    kept = {r["epoch"]: r.get("kept_trial") for r in run.rows_of("epoch")}
    by_epoch = {e: [r for r in trials if r["epoch"] == e] for e in sorted({r["epoch"] for r in trials})}
    outcome = "\n".join(f"- epoch {e}: {trial_outcome(rows, kept.get(e))} ({len(rows)} trial(s))"
                        for e, rows in by_epoch.items())
    table = md_table(["epoch", "trial", "S", "tau", "accepted", "loss"],
                      [[r["epoch"], r["trial"], num(r.get("sorting_quality"), 3), num(r.get("tau"), 4),
                        "yes" if r.get("accepted") else "no", num(r.get("loss"))] for r in trials])
    return f"{outcome}\n\n{table}"


def _candidate_table(run: Run) -> str:
    rows = sorted(run.candidates, key=lambda r: r["drop_top"])
    if not rows:
        return ""
    depth = (run.metrics or {}).get("prune.depth")
    chosen = f"Chosen: drop the top {depth} blocks.\n\n" if depth is not None else ""
    return chosen + md_table(["drop top", f"{rows[0].get('metric', 'score')} (%)", "seconds"],
                              [[r["drop_top"], pct(r["score"]), num(r.get("seconds"), 1)] for r in rows])


def _cycle_table(run: Run) -> str:
    rows = run.cycles
    if not rows:
        return ""
    return md_table(["cycle", "weights remaining (%)", "max LR", f"{rows[0].get('metric', 'score')} (%)"],
                     [[r.get("cycle", ""), f"{100 * r['remaining']:.1f}", num(r.get("max_lr"), 4), pct(r["score"])]
                      for r in rows])
