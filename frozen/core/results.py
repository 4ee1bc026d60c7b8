"""Results rows and how they are shown: the row keys, the one "setting" label, and the results tables
(Markdown and console) that evaluate.py, ``make demo`` and the model card print.

A row is one entry of ``results.json``'s ``"rows"``: :data:`ROW_KEYS` plus the settings of its kind
(:data:`SETTING_KEYS`). Tables group rows by (task, metric, setting label) in order of appearance;
the caller names the column a row fills and how its cell reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.markup import escape
from rich.table import Table

RESULTS_NAME = "results.json"
ROW_KEYS = ("task", "metric", "condition", "mean", "stddev", "num_examples", "num_trials")
"""Keys of every row. A row also holds the settings of its kind (:data:`SETTING_KEYS`), after
``metric``: ``shots`` (vqa, caption) or ``ways``, ``inner_shots``, ``repeats``, ``task_induction``
(episodes); vqa rows with demonstrations add ``demo_pool_size``; a row whose items were not all
scored adds ``skipped`` ({reason: items}, e.g. ``{"prompt_too_long": 3}``: a prompt longer than the LM's
positions), counted in the same trial as ``num_examples``."""
SETTING_KEYS = ("shots", "ways", "inner_shots", "repeats", "task_induction")
TEXT_COLUMNS = ("task", "metric", "setting", "condition", "skipped")  # left-aligned on the console; numbers go right

Row = dict[str, Any]
SettingKey = tuple[str, str, str]  # (task, metric, setting label)


def read_rows(path: str | Path) -> list[Row]:
    """The rows of a ``results.json`` (json.JSONDecodeError / AttributeError when it is not one)."""
    return list(json.loads(Path(path).read_text()).get("rows", []))


def setting_label(row: Row) -> str:
    """A row's settings in words: ``"4-shot"``, ``"2-way 1 inner shot 3 repeats +induction"``."""
    if "ways" in row:
        text = f"{row['ways']}-way {row['inner_shots']} inner shot" + (
            f" {row['repeats']} repeats" if row["repeats"] else "")
        return text + (" +induction" if row["task_induction"] else "")
    return f"{row.get('shots', 0)}-shot"


def group_by_setting(rows: Sequence[Row], column: Callable[[Row], str]) -> dict[SettingKey, dict[str, Row]]:
    """``{(task, metric, setting label): {column(row): row}}``, keys in order of first appearance."""
    groups: dict[SettingKey, dict[str, Row]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["metric"], setting_label(row)), {})[column(row)] = row
    return groups


def markdown_table(columns: Sequence[str], lines: Sequence[Sequence[str]], caption: str | None = None) -> str:
    """A Markdown table; a caption goes under it in italics, followed by a newline."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out) + (f"\n\n*{caption}*\n" if caption else "")


def console_table(columns: Sequence[str], lines: Sequence[Sequence[str]], *, title: str,
                  caption: str | None = None) -> Table:
    """The same table for the console (rich); cells are escaped: "vqa_accuracy[yes/no]" is not markup."""
    table = Table(title=title, caption=caption)
    for col in columns:
        table.add_column(col, justify="left" if col in TEXT_COLUMNS else "right")
    for line in lines:
        table.add_row(*(escape(cell) for cell in line))
    return table


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def skipped_cell(row: Row) -> str:
    """A row's skipped items per reason, ``"prompt_too_long 3"``; ``""`` when none were skipped."""
    return ", ".join(f"{reason} {n}" for reason, n in (row.get("skipped") or {}).items())


def rows_table(rows: Sequence[Row], title: str) -> Table:
    """evaluate.py's console table: one line per row, mean and sample std over trials ("–" when every
    item was skipped); a ``skipped`` column (items not scored, per reason) when any row has one."""
    skips = any(row.get("skipped") for row in rows)
    columns = ("task", "metric", "setting", "condition", "mean", "± std", "n", "trials") + (("skipped",) * skips)
    lines = [(row["task"], row["metric"], setting_label(row), row["condition"], _number(row["mean"]),
              _number(row["stddev"]), str(row["num_examples"]), str(row["num_trials"]))
             + ((skipped_cell(row),) * skips) for row in rows]
    return console_table(columns, lines, title=title)


def mean_cell(row: Row | None) -> str:
    """``"0.675"``, or ``"0.381 ± 0.062"`` over several trials; ``"–"`` when there is no row or mean."""
    if row is None or row.get("mean") is None:
        return "–"
    mean, std = row["mean"], row.get("stddev")
    return f"{mean:.3f} ± {std:.3f}" if std and (row.get("num_trials") or 1) > 1 else f"{mean:.3f}"


def condition_table(rows: Sequence[Row]) -> str:
    """The model card's Markdown table: one line per (task, metric, setting), one column per condition
    (image, no_image, ...) in order of appearance."""
    groups = group_by_setting(rows, lambda row: str(row.get("condition", "image")))
    conditions = list(dict.fromkeys(str(row.get("condition", "image")) for row in rows))
    lines = [[*key, *(mean_cell(by_condition.get(c)) for c in conditions)] for key, by_condition in groups.items()]
    return markdown_table(["task", "metric", "setting", *conditions], lines)
