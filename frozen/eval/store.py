"""The results of one evaluation run: rows, predictions, submissions and notes collected while the
task kinds run (:class:`ResultStore`), and the files they become: ``results.json`` (rows +
provenance), ``predictions.jsonl`` and the official server's files for unanswered splits
(``submissions/``). Row keys and tables: :mod:`frozen.core.results`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from frozen.core.files import fsync_dir, sha256_of
from frozen.core.results import RESULTS_NAME
from frozen.errors import write_error
from frozen.eval.metrics import mean_std


class ResultStore:
    """What the task kinds hand back: rows (every rank), predictions (rank 0 keeps them), the
    official server's files and notes printed under the table (e.g. why a task has no rows)."""

    def __init__(self, keep_predictions: bool):
        self.keep_predictions = keep_predictions
        self.rows: list[dict[str, Any]] = []
        self.predictions: list[dict[str, Any]] = []
        self.submissions: dict[str, list[dict[str, Any]]] = {}  # file name -> official server format
        self.notes: list[str] = []

    def add_row(self, name: str, metric: str, condition: str, values: list[float], n: int,
                settings: dict[str, Any], skipped: dict[str, int] | None = None, **extra: Any) -> None:
        """One results row of task ``name``: mean and sample std over ``values`` (one per trial; none
        when every item was skipped: mean and stddev None). ``skipped`` ({reason: items}, e.g.
        ``{"prompt_too_long": 3}``) becomes the row's ``skipped`` key when it counts any item."""
        mean, std = mean_std(values) if values else (None, None)
        row = {"task": name, "metric": metric, **settings, "condition": condition, "mean": mean, "stddev": std,
               "num_examples": n, "num_trials": len(values), **extra}
        if skipped and any(skipped.values()):
            row["skipped"] = dict(skipped)
        self.rows.append(row)

    def keep(self, name: str, settings: dict[str, Any], condition: str, trial: int,
             records: list[dict[str, Any]]) -> None:
        """Keep scored records for predictions.jsonl, tagged with their task and setting."""
        if self.keep_predictions:
            tag = {"task": name, **settings, "condition": condition, "trial": trial}
            self.predictions += [{**tag, **r} for r in records]


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
    """The sha256 of ``path``, or None when there is no such file."""
    return sha256_of(path) if Path(path).is_file() else None


def write_results(run_dir: str | Path, rows: list[dict[str, Any]], predictions: list[dict[str, Any]], *,
                  config: dict[str, Any], checkpoint: str | Path | None, extra: dict[str, Any] | None = None,
                  submissions: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """``results.json`` = {"rows": [...], "config", "git_commit", "checkpoint", "checkpoint_sha256", ...};
    ``predictions.jsonl`` (one record per generated answer); ``submissions/{file}`` per entry of
    ``submissions`` (``[{"question_id": int, "answer": str}]``, the format the VQA server takes)."""
    run_dir = Path(run_dir)
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
    files = {RESULTS_NAME: json.dumps(payload, indent=2, default=str) + "\n",
             "predictions.jsonl": "".join(json.dumps(record, default=str) + "\n" for record in predictions)}
    files |= {f"submissions/{name}": json.dumps(answers) + "\n" for name, answers in (submissions or {}).items()}
    write_all(run_dir, files)
    return run_dir / RESULTS_NAME


def write_all(folder: Path, files: dict[str, str]) -> None:
    """Write ``{relative path: text}`` under ``folder``: every file to a fsync'd ``.tmp`` first, then all
    renamed and the folders fsync'd (the order :func:`~frozen.core.files.atomic_write` keeps for one
    file), so a full disk or read-only folder (one-line :class:`~frozen.errors.WriteError` naming the
    path and the free space) leaves the files of an earlier run as they were and no ``.tmp`` behind."""
    tmps: list[Path] = []
    path = folder
    try:
        for rel, text in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmps.append(path.with_name(path.name + ".tmp"))
            tmps[-1].write_text(text)
            with open(tmps[-1], "rb+") as f:
                os.fsync(f.fileno())  # on disk before a rename publishes it: a power loss leaves old or new
        for tmp in tmps:
            path = tmp.with_name(tmp.name[: -len(".tmp")])
            os.replace(tmp, path)
        for parent in dict.fromkeys(tmp.parent for tmp in tmps):
            fsync_dir(parent)
    except OSError as exc:
        for tmp in tmps:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        raise write_error(path, exc, f"the results already in {folder} are as they were") or exc from exc
