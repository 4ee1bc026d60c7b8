"""Few-shot figures from results rows: ``fewshot.png`` beside an evaluation's results.json, and make demo's
figure of both models.

Two steps, so the plotted numbers can be checked against the rows: :func:`panels` turns rows into
:class:`Panel` data (one panel per task: its headline metric, :data:`HEADLINE_METRICS`; a point per
setting and series with its interval and the chance level), :func:`draw` renders them with matplotlib's
Agg canvas (no display, no pyplot state) into a PNG whose bytes depend only on the data.

* Tasks with shots (vqa, caption): the metric against shots, one line per series (an evaluation's
  condition; make demo: the model, and ``no_image``).
* Episode tasks (binding, deepmind: rows with ``ways``): bars per setting (``2-way 1 inner shot
  +induction``), one bar per series, chance drawn over each setting's bars.
* Whiskers: the 95% interval of a proportion metric (the row's ``ci95`` when it has one, from
  :func:`frozen.eval.stats.aggregate_seeds`, else the Wilson interval on its ``num_examples``); a metric
  that is not a proportion (CIDEr, perplexity) has none, so it gets ± the row's spread (std over training
  seeds for make demo's rows with several seeds, else over evaluation trials). The panel title says which.
* Chance: :func:`frozen.eval.stats.chance` (1/ways for naming episodes, 0.5 for yes/no questions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from frozen.core.results import Row, setting_label
from frozen.errors import write_error
from frozen.eval.stats import chance, is_proportion, wilson_interval

FEWSHOT_NAME = "fewshot.png"
HEADLINE_METRICS = ("vqa_accuracy", "accuracy", "CIDEr", "exact_match")
"""A task's panel shows the first of these its rows have (else its first metric): the answer-type splits,
``accuracy_strict``, BLEU-4 and perplexity stay in results.json and the table."""
COLORS = ("#1f77b4", "#d62728", "#7f7f7f", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
PANEL_SIZE = (5.0, 3.6)  # inches per panel
DPI = 100
INTERVAL = "95% interval"
PNG_METADATA = {"Software": None}  # no matplotlib version in the file: the bytes depend on the data only


@dataclass(frozen=True)
class Point:
    """One plotted value: ``x`` (shots, or a setting label for bars), ``y`` = the row's mean and its whisker
    ``low``..``high`` (equal to ``y`` when the row has neither an interval nor a spread)."""

    x: int | str
    y: float
    low: float
    high: float


@dataclass
class Panel:
    """One task's axes: ``series`` {label: points in x order}; ``chance`` {x: level} where chance is defined."""

    task: str
    metric: str
    bars: bool
    whisker: str  # what the whiskers are, in words (title)
    xs: list[int | str] = field(default_factory=list)
    series: dict[str, list[Point]] = field(default_factory=dict)
    chance: dict[int | str, float] = field(default_factory=dict)


def condition_series(row: Row) -> str:
    """An evaluation's series: its condition (``image``, ``no_image``, ``text_demos``, ...)."""
    return str(row.get("condition", "image"))


def spread(row: Row) -> float | None:
    """The row's spread: std over training seeds (aggregated rows of several seeds), else over trials."""
    if (row.get("num_seeds") or 1) > 1:
        return row.get("seed_std")
    return row.get("stddev", row.get("trial_std"))


def interval(row: Row) -> tuple[float, float] | None:
    """The 95% interval of the row's mean: its ``ci95``, else Wilson for a proportion metric; None otherwise."""
    if row.get("ci95"):
        low, high = row["ci95"]
        return float(low), float(high)
    mean, n = row.get("mean"), row.get("num_examples")
    if mean is not None and n and is_proportion(row["metric"]) and 0.0 <= mean <= 1.0:
        return wilson_interval(float(mean), int(n))
    return None


def headline_metric(rows: Sequence[Row]) -> str:
    """The metric a task's panel shows (:data:`HEADLINE_METRICS`, else the task's first metric)."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    return next((m for m in HEADLINE_METRICS if m in metrics), metrics[0])


def whisker_text(rows: Sequence[Row]) -> str:
    """What a panel's whiskers are: :data:`INTERVAL` when its metric has one, else the spread's kind."""
    if any(interval(r) for r in rows):
        return INTERVAL
    seeds = max((r.get("num_seeds") or 1) for r in rows)
    if seeds > 1:
        return f"± std over {seeds} training seeds"
    return "± std over evaluation trials" if max(r.get("num_trials") or 1 for r in rows) > 1 else "none (one trial)"


def panels(rows: Sequence[Row], series: Callable[[Row], str] = condition_series,
           order: Sequence[str] = ()) -> list[Panel]:
    """The figure's data: one :class:`Panel` per task (order of appearance), its headline metric only.

    Series come in the order of ``order``, then of appearance. Rows without a mean (every item skipped) are
    left out; a (series, setting) seen twice keeps its first row (make demo's shared no_image rows).
    Whiskers: :func:`interval` for every point when the metric is a proportion, else ± :func:`spread`.
    """
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        metric = headline_metric(mine)
        mine = [r for r in mine if r["metric"] == metric and r.get("mean") is not None]
        bars = any("ways" in r for r in mine)
        panel = Panel(task, metric, bars, whisker_text(mine) if mine else "")
        for row in mine:
            x = setting_label(row) if bars else int(row.get("shots", 0))
            level = chance(row)
            if level is not None:
                panel.chance.setdefault(x, level)
            points = panel.series.setdefault(series(row), [])
            if any(p.x == x for p in points):
                continue
            mean = float(row["mean"])
            bounds = interval(row) if panel.whisker == INTERVAL else None
            if bounds is None:
                std = spread(row) or 0.0
                bounds = (mean - std, mean + std)
            points.append(Point(x, mean, bounds[0], bounds[1]))
        panel.xs = sorted({p.x for pts in panel.series.values() for p in pts}, key=_x_order(mine, bars))
        for label in panel.series:
            panel.series[label].sort(key=lambda p: panel.xs.index(p.x))
        labels = [x for x in order if x in panel.series] + [x for x in panel.series if x not in order]
        panel.series = {label: panel.series[label] for label in labels}
        out.append(panel)
    return out


def _x_order(rows: Sequence[Row], bars: bool) -> Callable[[Any], Any]:
    if not bars:
        return lambda x: x
    order = list(dict.fromkeys(setting_label(r) for r in rows))
    return order.index


def draw(figure_panels: Sequence[Panel], path: str | Path, title: str | None = None) -> Path | None:
    """Render ``figure_panels`` to the PNG ``path`` (written to a ``.tmp`` first, then renamed); None when
    there is nothing to plot. Same panels, same bytes: fixed size and dpi, no version or date in the file."""
    shown = [p for p in figure_panels if p.series]
    if not shown:
        return None
    cols = min(3, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows + (0.5 if title else 0)), dpi=DPI)
    FigureCanvasAgg(fig)
    labels = list(dict.fromkeys(label for p in shown for label in p.series))
    colors = {label: COLORS[i % len(COLORS)] for i, label in enumerate(labels)}
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, panel in zip(axes, shown):
        (_bars if panel.bars else _lines)(ax, panel, colors)
        ax.set_title(f"{panel.task}: {panel.metric}\n(whiskers: {panel.whisker})", fontsize=10)
        ax.set_ylabel(panel.metric)
        ax.grid(axis="y", alpha=0.3)
        if is_proportion(panel.metric):
            ax.set_ylim(0.0, 1.0)
        ax.legend(fontsize=8, loc="best")
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fig.savefig(tmp, format="png", metadata=PNG_METADATA)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc, "the results files are not affected") or exc from exc
    return path


def _yerr(points: Sequence[Point]) -> list[list[float]]:
    """Whisker lengths below and above; never negative (Wilson's low end at p = 0 can round to 1e-17)."""
    return [[max(0.0, p.y - p.low) for p in points], [max(0.0, p.high - p.y) for p in points]]


def _lines(ax, panel: Panel, colors: dict[str, str]) -> None:
    span = max(1, max(panel.xs) - min(panel.xs))
    for i, (label, points) in enumerate(panel.series.items()):
        dodge = (i - (len(panel.series) - 1) / 2) * 0.03 * span  # side by side: whiskers at one x stay apart
        xs, ys = [p.x + dodge for p in points], [p.y for p in points]
        yerr = _yerr(points)
        ax.errorbar(xs, ys, yerr=yerr, color=colors[label], marker="o", capsize=3, label=label)
        if len(points) > 1:
            ax.fill_between(xs, [p.low for p in points], [p.high for p in points], color=colors[label], alpha=0.12)
    levels = set(panel.chance.values())
    for level in sorted(levels):
        ax.axhline(level, color="black", linestyle="--", linewidth=1, label=f"chance {level:.2f}")
    ax.set_xticks(panel.xs)
    ax.set_xlim(min(panel.xs) - 0.1 * span - 0.3, max(panel.xs) + 0.1 * span + 0.3)
    ax.set_xlabel("shots (demonstrations in the prompt)")


def _bars(ax, panel: Panel, colors: dict[str, str]) -> None:
    width = 0.8 / max(1, len(panel.series))
    for i, (label, points) in enumerate(panel.series.items()):
        xs = [panel.xs.index(p.x) - 0.4 + width * (i + 0.5) for p in points]
        yerr = _yerr(points)
        ax.bar(xs, [p.y for p in points], width=width, yerr=yerr, capsize=3, color=colors[label], label=label)
    drawn = [j for j, x in enumerate(panel.xs) if x in panel.chance]
    for j in drawn:  # each setting's own level: 1/ways differs between 2-way and 5-way settings
        ax.hlines(panel.chance[panel.xs[j]], j - 0.45, j + 0.45, colors="black", linestyles="--", linewidth=1,
                  label="chance (1/ways)" if j == drawn[0] else None)
    ax.set_xticks(range(len(panel.xs)), [str(x).replace(" +", "\n+") for x in panel.xs], fontsize=8)
    ax.set_xlabel("setting")


def write_fewshot(rows: Sequence[Row], run_dir: str | Path, title: str | None = None) -> Path | None:
    """An evaluation's ``fewshot.png`` beside its results.json (one series per condition); None without rows."""
    return draw(panels(rows), Path(run_dir) / FEWSHOT_NAME, title)
