"""Evaluation outputs: results.json (rows + provenance), predictions.jsonl, the official server's
predictions files for unanswered splits (submissions/), a rich console table."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROW_KEYS = ("task", "metric", "condition", "mean", "stddev", "num_examples", "num_trials")
"""Keys of every row. A row also holds the settings of its kind (:data:`SETTING_KEYS`), after
``metric``: ``shots`` (vqa, caption) or ``ways``, ``inner_shots``, ``repeats``, ``task_induction``
(episodes); vqa rows with demonstrations add ``demo_pool_size``."""
SETTING_KEYS = ("shots", "ways", "inner_shots", "repeats", "task_induction")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current commit (with a ``-dirty`` suffix when the tree has changes), or None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                               text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def file_sha256(path: str | Path) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_results(run_dir: str | Path, rows: list[dict[str, Any]], predictions: list[dict[str, Any]], *,
                  config: dict[str, Any], checkpoint: str | Path | None, extra: dict[str, Any] | None = None,
                  submissions: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """``results.json`` = {"rows": [...], "config", "git_commit", "checkpoint", "checkpoint_sha256", ...};
    ``predictions.jsonl`` (one record per generated answer); ``submissions/{file}`` per entry of
    ``submissions`` (``[{"question_id": int, "answer": str}]``, the format the VQA server takes)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = Path(checkpoint) / "model.safetensors" if checkpoint and Path(checkpoint).is_dir() else checkpoint
    payload = {
        "rows": rows,
        "config": config,
        "git_commit": git_commit(Path(__file__).parent),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": file_sha256(weights) if weights else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    out = run_dir / "results.json"
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    with open(run_dir / "predictions.jsonl", "w") as f:
        for record in predictions:
            f.write(json.dumps(record, default=str) + "\n")
    for name, answers in (submissions or {}).items():
        (run_dir / "submissions").mkdir(exist_ok=True)
        (run_dir / "submissions" / name).write_text(json.dumps(answers) + "\n")
    return out


def setting_text(row: dict[str, Any]) -> str:
    """``"4 shots"`` or ``"2-way, inner_shots=1, repeats=0, induction"`` for the table."""
    if "ways" in row:
        induction = ", induction" if row.get("task_induction") else ""
        return f"{row['ways']}-way, inner_shots={row['inner_shots']}, repeats={row['repeats']}{induction}"
    return f"{row.get('shots', 0)} shots"


def results_table(rows: list[dict[str, Any]], title: str = "results", extra_columns: tuple[str, ...] = ()) -> Table:
    table = Table(title=title)
    for col in (*extra_columns, "task", "metric", "setting", "condition", "mean", "± std", "n", "trials"):
        table.add_column(col, justify="right" if col in ("mean", "± std", "n", "trials") else "left")
    for row in rows:
        # escape: "vqa_accuracy[yes/no]" would otherwise be read as rich markup and vanish
        table.add_row(*(escape(str(row.get(c, ""))) for c in extra_columns), escape(row["task"]), escape(row["metric"]),
                      escape(setting_text(row)), escape(row["condition"]), f"{row['mean']:.4f}", f"{row['stddev']:.4f}",
                      str(row["num_examples"]), str(row["num_trials"]))
    return table


def print_table(rows: list[dict[str, Any]], title: str = "results", console: Console | None = None,
                notes: Sequence[str] = (), **kwargs: Any) -> None:
    """The results table, then one line per note (e.g. why a task has no rows)."""
    console = console or Console()
    console.print(results_table(rows, title, **kwargs))
    for note in notes:
        console.print(f"note: {escape(note)}")
