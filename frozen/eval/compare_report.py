"""``make compare``'s report: the protocol flags, the runs table (the config values that vary), the results
table (one line per cell, one column per run) and the curves of compare.png (a metric against a numeric
config value, 95% intervals). Runs come from :func:`frozen.eval.compare.load_runs`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from frozen.core.results import markdown_table
from frozen.eval.compare import Run, interval, load_runs, varying
from frozen.eval.position import GAP_NAME, gap_text, position_gaps
from frozen.eval.protocol import NOT_RECORDED
from frozen.eval.store import write_all

FLAG = "⚠"
# Numeric config values that make a curve's x, in order of preference (lm_num_parameters when the LM varies).
# Not trainer.max_steps: a fine-tuned model's steps continue another run's (make demo's frozen_vqa); --x draws any.
X_KEYS = ("lm_num_parameters", "model.num_prefix_tokens", "trainer.lr", "model.image_size")
LOG_X = ("lm_num_parameters", "trainer.lr")
MAX_PANELS = 12


def _text(value: Any) -> str:
    """A config value in a cell: strings as they are (quoted when their spaces matter), the rest as JSON."""
    plain = isinstance(value, str) and value == value.strip() and value != ""
    return value if plain else json.dumps(value, default=str)


def protocol_groups(runs: Sequence[Run]) -> dict[str, dict[str, int]]:
    """``{task: {run label: group}}``: runs with the same protocol for a task share a group (0, 1, ...)."""
    out: dict[str, dict[str, int]] = {}
    for task in dict.fromkeys(t for run in runs for t in run.protocol):
        seen: list[str] = []
        for run in runs:
            if task in run.protocol:
                text = json.dumps(run.protocol[task], sort_keys=True, default=str)
                seen += [text] * (text not in seen)
                out.setdefault(task, {})[run.label] = seen.index(text)
    return out


def flags(runs: Sequence[Run]) -> list[str]:
    """One line per task and protocol field that differs between runs, e.g.
    ``⚠ vqa: shots differs: [0, 2] (a) vs [0] (b)``."""
    lines = []
    for task, groups in protocol_groups(runs).items():
        if len(set(groups.values())) < 2:
            continue
        having = [run for run in runs if run.label in groups]
        fields = dict.fromkeys(k for run in having for k in run.protocol[task])
        for key in fields:
            values: dict[str, list[str]] = {}
            for run in having:
                values.setdefault(_text(run.protocol[task].get(key, NOT_RECORDED)), []).append(run.label)
            if len(values) > 1:
                lines.append(f"{FLAG} {task}: {key} differs: "
                             + " vs ".join(f"{v} ({', '.join(labels)})" for v, labels in values.items()))
    return lines


def cell_text(row: dict | None) -> str:
    """``0.675 [0.610, 0.734]`` (95% interval), ``1.234 ± 0.050`` (std over trials), ``–`` (no cell)."""
    if row is None or row.get("mean") is None:
        return "–"
    ci = interval(row)
    if ci is not None:
        return f"{row['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    std, trials = row.get("stddev"), row.get("num_trials") or 1
    return f"{row['mean']:.3f} ± {std:.3f}" if std and trials > 1 else f"{row['mean']:.3f}"


def results_lines(runs: Sequence[Run]) -> list[list[str]]:
    """One line per cell (task, condition, setting, metric) in order of appearance, one column per run; the
    task reads ``task ⚠`` when runs measured it with different protocols. Last, a ``position gap`` line per
    task that ran the position check (:func:`frozen.eval.position.position_gaps`)."""
    groups = protocol_groups(runs)
    cells = [run.cells() for run in runs]
    keys = list(dict.fromkeys(k for c in cells for k in c))
    lines = []
    for key in keys:
        by_run = groups.get(key[0], {})
        differs = len(set(by_run.values())) > 1
        texts = [cell_text(c.get(key)) + (f" ({_letter(by_run[r.label])})" if differs and key in c else "")
                 for r, c in zip(runs, cells)]
        lines.append([key[0] + (f" {FLAG}" if differs else ""), *key[1:], *texts])
    gaps = [position_gaps(run.rows) for run in runs]  # derived: image minus text_first, 0-shot VQA accuracy
    for task in dict.fromkeys(task for g in gaps for task, _ in g):
        lines.append([task, "image − text_first", "0-shot", GAP_NAME,
                      *(gap_text(g[task, ""]) if (task, "") in g else "–" for g in gaps)])
    return lines


def _letter(group: int) -> str:
    return chr(ord("A") + group)


@dataclass
class Curve:
    """One line of compare.png: a metric of one cell against ``x`` (run indices when no config value is
    numeric), one point per run; ``lo``/``hi`` the 95% interval (None: none)."""

    panel: str
    label: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    lo: list[float | None] = field(default_factory=list)
    hi: list[float | None] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def x_key(runs: Sequence[Run], keys: Sequence[str], wanted: str | None = None) -> str | None:
    """The config value to draw against: ``wanted``, else the first of :data:`X_KEYS` that varies and is a
    number in every run; None when there is none (the runs are drawn side by side)."""
    numeric = [k for k in keys if all(isinstance(r.config.get(k), (int, float))
                                      and not isinstance(r.config.get(k), bool) for r in runs)]
    if wanted is not None:
        return wanted if wanted in numeric else None
    return next((k for k in X_KEYS if k in numeric), None)


def curves(runs: Sequence[Run], x: str | None, keys: Sequence[str]) -> list[Curve]:
    """A curve per (panel = task · metric · setting, condition, the other varying values, protocol group):
    runs measured with different protocols never share a line."""
    groups = protocol_groups(runs)
    others = [k for k in keys if k != x and not (x == "lm_num_parameters" and k == "lm.name")]
    out: dict[tuple, Curve] = {}
    for i, run in enumerate(runs):
        for (task, condition, setting, metric), row in run.cells().items():
            if row.get("mean") is None:
                continue
            group = groups.get(task, {}).get(run.label, 0)
            series = [condition] + ([f"{k}={_text(run.config.get(k))}" for k in others] if x else [])
            series += [f"protocol {_letter(group)}"] if len(set(groups.get(task, {}).values())) > 1 else []
            panel = f"{task} · {metric} · {setting}"
            curve = out.setdefault((panel, *series), Curve(panel, ", ".join(series)))
            ci = interval(row)
            curve.x.append(float(run.config[x]) if x else float(i))
            curve.y.append(float(row["mean"]))
            curve.lo.append(ci[0] if ci else None)
            curve.hi.append(ci[1] if ci else None)
            curve.runs.append(run.label)
    for curve in out.values():  # points in x order
        order = sorted(range(len(curve.x)), key=curve.x.__getitem__)
        for name in ("x", "y", "lo", "hi", "runs"):
            setattr(curve, name, [getattr(curve, name)[j] for j in order])
    return list(out.values())


def _short(value: float) -> str:
    """``46464`` -> ``46k``, ``1.35e8`` -> ``135M``; small numbers as ``%g``."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:g}"


def figure(all_curves: Sequence[Curve], runs: Sequence[Run], x: str | None, path: Path) -> list[str]:
    """Draw the curves into ``path`` (a panel each of the first :data:`MAX_PANELS` cells); the panels drawn."""
    panels = list(dict.fromkeys(c.panel for c in all_curves))
    panels = ([p for p in panels if "[" not in p] + [p for p in panels if "[" in p])[:MAX_PANELS]  # breakdowns last
    cols = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, panel in zip(axes, panels):
        lines = [c for c in all_curves if c.panel == panel]
        xs = [v for c in lines for v in c.x]
        span = 2.0 if x is None else (max(xs) - min(xs)) or 1.0
        for i, curve in enumerate(lines):  # lines nudged apart on x so that equal points keep visible intervals
            shift = (i - (len(lines) - 1) / 2) * 0.015
            x_drawn = [v * 10 ** shift if x in LOG_X else v + shift * span for v in curve.x]
            # max(0, ...): a Wilson bound at p = 0 or 1 can miss the mean by a rounding error
            below = [max(0.0, y - lo) if lo is not None else 0.0 for y, lo in zip(curve.y, curve.lo)]
            above = [max(0.0, hi - y) if hi is not None else 0.0 for y, hi in zip(curve.y, curve.hi)]
            ax.errorbar(x_drawn, curve.y, yerr=[below, above], marker="o", capsize=3, label=curve.label,
                        linestyle="-" if x else "none")  # runs side by side are points, not a curve
        ax.set_title(panel, fontsize=9)
        if x in LOG_X:  # ticks at the runs' values: 46k, 135M, 1e-04 (log-scale minor labels overlap)
            ax.set_xscale("log")
            ticks = sorted({v for c in all_curves for v in c.x})
            ax.set_xticks(ticks, [_short(v) for v in ticks], fontsize=7)
            ax.xaxis.set_minor_formatter(NullFormatter())
        if x is not None and all(float(v).is_integer() for c in all_curves for v in c.x) and x not in LOG_X:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if x is None:
            ax.set_xlim(-0.5, len(runs) - 0.5)
            ax.set_xticks(range(len(runs)), [r.label for r in runs], rotation=20, fontsize=7)
        ax.set_xlabel(x or "run")
        ax.legend(fontsize=6)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if not panels:
        axes[0].text(0.5, 0.5, "no cells with a value", ha="center")
    fig.savefig(path, dpi=110)
    return panels


def markdown(runs: Sequence[Run], keys: Sequence[str], x: str | None, panels: Sequence[str], total: int) -> str:
    """compare.md: flags, runs (folder + varying config), results (cells x runs), what the figure shows."""
    out = [f"# Comparing {len(runs)} runs", "", "## Protocol"]
    lines = flags(runs)
    out += ([*lines, "", "Cells of a flagged task are not comparable across those runs: they are marked "
             f"`{FLAG}` below and drawn as separate lines (protocol A, B, ...)."] if lines
            else ["Every task was measured with the same protocol in all runs that have it."])
    out += ["", "## Runs", markdown_table(["run", "folder", *keys],
                                          [[r.label, str(r.path), *(_text(r.config.get(k, "–")) for k in keys)]
                                           for r in runs])]
    if not keys:
        out += ["", "No config value differs between the runs."]
    out += ["", "## Results", markdown_table(
        ["task", "condition", "setting", "metric", *(r.label for r in runs)], results_lines(runs),
        "mean [95% interval]: Wilson on the questions for accuracy-like metrics, t over batches for the "
        "validation loss; mean ± std over evaluation trials otherwise; – : the run has no such cell; (A), (B): "
        "the protocol a flagged task's cell was measured with").rstrip()]
    shown = f"the first {len(panels)} of {total} panels" if len(panels) < total else \
        f"{len(panels)} panel" + "s" * (len(panels) != 1)
    out += ["", "## Figure", f"compare.png: {shown}, the metric against {x or 'each run'} (95% intervals)."]
    return "\n".join(out) + "\n"


def compare(folders: Sequence[str | Path], out: str | Path, x: str | None = None) -> dict[str, Any]:
    """Write ``out/compare.md`` and ``out/compare.png`` for the runs in ``folders``; returns what they show."""
    runs = load_runs(folders)
    keys = varying(runs)
    x = x_key(runs, keys, x)
    all_curves = curves(runs, x, keys)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    panels = figure(all_curves, runs, x, out / "compare.png")
    text = markdown(runs, keys, x, panels, len({c.panel for c in all_curves}))
    write_all(out, {"compare.md": text})
    return {"runs": runs, "keys": keys, "x": x, "curves": all_curves, "flags": flags(runs),
            "markdown": out / "compare.md", "figure": out / "compare.png"}
