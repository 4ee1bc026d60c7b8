"""Rank-0 logging: a rich console/progress bar, a metrics.jsonl file, and W&B (imported lazily).

W&B without an API key and without a mode fails at once, so ``mode=auto`` picks ``online`` only when
a key is configured and ``offline`` otherwise; ``WANDB_MODE`` in the environment always wins.
:meth:`RunLogger.finish` runs in the trainer's ``finally`` so Hydra multirun jobs never leak a run.

One W&B run per run directory: its id is kept in ``<run_dir>/wandb_run_id.txt``, and a resumed or
requeued run continues it (``resume="allow"``). Steps that metrics.jsonl already holds (logged before
the stop, then trained again from an earlier checkpoint) are not sent to W&B again, so its step axis
continues from the last step it has, with no step logged twice.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from frozen.errors import write_error

# Logs and CI are not terminals: rich would wrap tables at 80 columns there.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


def wandb_mode(requested: str) -> str:
    """Resolve logger.mode=auto to online/offline from the environment; honour WANDB_MODE."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError):
        auth = None
    return "online" if auth else "offline"


WANDB_ID_FILE = "wandb_run_id.txt"


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory: read back, or made and written on the run's first start."""
    path = run_dir / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = secrets.token_hex(6)  # W&B ids: lowercase letters and digits
    tmp = path.with_suffix(".tmp")
    tmp.write_text(run_id + "\n")
    tmp.replace(path)  # atomic: a stop while writing never leaves half an id
    return run_id


def last_logged_step(jsonl: Path) -> int | None:
    """The highest step in an existing metrics.jsonl (None if none): what W&B already has of this run."""
    if not jsonl.is_file():
        return None
    steps = []
    for line in jsonl.read_text().splitlines():
        try:
            steps.append(int(json.loads(line).get("step", 0)))
        except (ValueError, AttributeError):  # a blank or cut line (a crash mid-write) says nothing
            continue
    return max(steps, default=None)


# What the progress bar (and a non-interactive console's line) shows of a step's metrics.
STATS = ("loss", "lr", "img/s", "tok/s", "padding", "mfu")


class RunLogger:
    """Console + jsonl + optional W&B for one run. Only rank 0 constructs an active logger."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        active: bool,
        backend: str = "none",
        project: str = "frozen",
        entity: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        mode: str = "auto",
        config: dict[str, Any] | None = None,
        total_steps: int = 0,
        start_step: int = 0,
    ):
        self.active = active
        self.run_dir = Path(run_dir)
        self.wandb_run = None
        self.progress: Progress | None = None
        self._task = None
        self._last_print = 0.0
        if not active:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Training (a step bar) continues its run dir's W&B run; each evaluation is a W&B run of its own.
        training = bool(total_steps)
        self._wandb_after = last_logged_step(self.run_dir / "metrics.jsonl") if training else None  # W&B has these
        self._jsonl = open(self.run_dir / "metrics.jsonl", "ab", buffering=0)  # each line on disk as written
        if backend == "wandb":
            resolved = wandb_mode(mode)
            if resolved != "disabled":
                import wandb  # lazy: importing wandb costs ~1 s and is unneeded with logger=none

                self._wandb = wandb  # for wandb.Table and wandb.Image later
                self.wandb_run = wandb.init(
                    project=project,
                    entity=entity,
                    name=name,
                    tags=tags or None,
                    dir=str(self.run_dir),
                    config=config,
                    mode=resolved,
                    reinit="finish_previous",
                    id=wandb_run_id(self.run_dir) if training else None,
                    resume="allow" if training else None,
                )
                console.print(f"[dim]W&B run in {resolved} mode: {self.wandb_run.dir}[/dim]")
        if not total_steps:  # evaluation: no step bar
            return
        self.progress = Progress(
            TextColumn("[bold]train[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.progress.start()
        self._task = self.progress.add_task("train", total=total_steps, completed=start_step, stats="")

    def step(self, step: int, metrics: dict[str, float]) -> None:
        """Advance the bar to ``step`` and log ``metrics`` (jsonl every call, W&B, bar fields)."""
        if not self.active:
            return
        self._append({"step": step, "time": time.time(), **{k: _plain(v) for k, v in metrics.items()}})
        if self._to_wandb(step):
            self.wandb_run.log(metrics, step=step)
        stats = "  ".join(_fmt(k, metrics[k]) for k in STATS if k in metrics)
        if self.progress is not None:
            self.progress.update(self._task, completed=step, stats=stats)
        # Non-interactive consoles (CI, log files) never redraw the bar: print a line now and then.
        if not console.is_terminal and time.time() - self._last_print > 10:
            console.print(f"step {step}  {stats}")
            self._last_print = time.time()

    def advance(self, step: int) -> None:
        if self.active and self.progress is not None:
            self.progress.update(self._task, completed=step)

    def event(self, step: int, metrics: dict[str, Any]) -> None:
        """Validation results and other one-off numbers: jsonl + W&B, no bar update."""
        if not self.active:
            return
        self._append({"step": step, "time": time.time(), **{k: _plain(v) for k, v in metrics.items()}})
        if self._to_wandb(step):
            self.wandb_run.log(metrics, step=step)

    def _append(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl; a full disk is one line naming the file, which keeps its whole lines."""
        fd, line = self._jsonl.fileno(), memoryview((json.dumps(record) + "\n").encode())
        size = os.fstat(fd).st_size
        try:
            while line:
                line = line[self._jsonl.write(line):]  # an unbuffered write may be short
        except OSError as err:
            try:
                os.ftruncate(fd, size)  # no half line for the next reader or the resumed run to append to
            except OSError:
                pass
            raise write_error(self._jsonl.name, err, "the lines before are kept") or err

    def _to_wandb(self, step: int) -> bool:
        """Whether ``step`` goes to W&B: not a step it got before a resume (W&B's steps only increase)."""
        return self.wandb_run is not None and (self._wandb_after is None or step > self._wandb_after)

    def print(self, *args: Any) -> None:
        if self.active:
            console.print(*args)

    def table(self, key: str, step: int, columns: list[str], rows: list[list[Any]]) -> None:
        """A W&B table (images become wandb.Image); a plain console table otherwise."""
        if not self.active:
            return
        if self._to_wandb(step):
            data = [[self._wandb.Image(c) if _is_image(c) else c for c in row] for row in rows]
            self.wandb_run.log({key: self._wandb.Table(columns=columns, data=data)}, step=step)

    def image(self, key: str, step: int, path: str | Path) -> None:
        """An image file (a figure) as a wandb.Image; nothing without W&B."""
        if self.active and self._to_wandb(step):
            self.wandb_run.log({key: self._wandb.Image(str(path))}, step=step)

    def finish(self) -> None:
        if not self.active:
            return
        if self.progress is not None:
            self.progress.stop()
        self._jsonl.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def _is_image(value: Any) -> bool:
    return hasattr(value, "save") and hasattr(value, "size") or getattr(value, "ndim", 0) == 3


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _fmt(key: str, value: float) -> str:
    if key == "lr":
        return f"lr {value:.2e}"
    if key in ("padding", "mfu"):
        return f"{key} {value:.1%}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key} {value}"
    return f"{key} {value:.3f}" if key == "loss" else f"{key} {value:.1f}"
