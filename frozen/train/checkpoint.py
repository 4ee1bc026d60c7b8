"""Resume checkpoints: what one holds, how it is written and found, and how it is loaded back.

A checkpoint holds the trainable weights, optimizer, scaler, step, every rank's RNG state, the data
position (sample and skip counters), the non-finite step count and the resolved config. Written
atomically (temporary file + ``os.replace``, the file and then its directory fsync'd) so a run killed
mid-write never leaves a truncated checkpoint that a resume would trust; a ``step_X.pt.sha256`` written
after it is checked on resume, and a damaged checkpoint (truncated, bit-flipped, unreadable) is moved
aside as ``step_X.pt.damaged`` while the newest intact one is used (:func:`newest_intact`). Read with
``torch.load(weights_only=True)``: only tensors and plain containers are unpickled, no code runs from
a checkpoint file. The portable artifact is the separate ``save_pretrained`` export; this file is for
resuming a run.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from frozen.config import TrainConfig
from frozen.core import dist
from frozen.core.files import atomic_write, sha256_of
from frozen.data.samples import SkipCounter
from frozen.errors import FrozenError, write_error

CKPT_DIR = "checkpoints"
_PATTERN = re.compile(r"step_(\d{8})\.pt$")
CHECKSUM_SUFFIX = ".sha256"
DAMAGED_SUFFIX = ".damaged"
RELAUNCH = "then relaunch the same command: it resumes from the last checkpoint"


class CheckpointError(FrozenError, OSError):
    """No intact checkpoint to resume from (each damaged one was reported and moved aside)."""


def _torch_save(state: dict[str, Any], tmp: str) -> None:
    """``torch.save`` through a Python file: a full disk then surfaces as the OSError (ENOSPC, EFBIG) that
    torch's RuntimeError ("unexpected pos ...") is raised during, which :func:`write_error` names."""
    with open(tmp, "wb") as f:
        torch.save(state, f)


def rng_state() -> dict[str, Any]:
    """This process's RNG states as weights_only-safe values (tensors, ints, lists)."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _PATTERN.search(p.name))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_load_path(load_path: str) -> Path:
    """``load_path`` may name a checkpoint file or a run directory (its latest checkpoint)."""
    path = Path(load_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(
                f"load_path={load_path} holds no {CKPT_DIR}/step_*.pt; point it at a run directory or .pt file"
            )
        return latest
    raise FileNotFoundError(f"load_path={load_path} does not exist; give a checkpoint .pt or a run directory")


def save(path: str | Path, state: dict[str, Any], keep_last: int = 0) -> Path:
    """Atomically write ``state`` and its checksum; then delete all but the newest ``keep_last`` (0 keeps all).

    Rotation runs only once the new checkpoint was read back and matched its checksum, so it never
    removes the last intact checkpoint. A full or read-only disk raises :class:`frozen.errors.WriteError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: _torch_save(state, tmp))
        digest = sha256_of(path)
        atomic_write(Path(f"{path}{CHECKSUM_SUFFIX}"), lambda tmp: Path(tmp).write_text(f"{digest}  {path.name}\n"))
    except (OSError, RuntimeError) as err:  # torch.save's writer: RuntimeError
        raise write_error(path, err, RELAUNCH) or err
    if keep_last > 0:
        for old in list_checkpoints(path.parent.parent)[:-keep_last]:
            if old != path:
                old.unlink(missing_ok=True)
                Path(f"{old}{CHECKSUM_SUFFIX}").unlink(missing_ok=True)
    return path


def load(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def verified_load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint after checking its ``.sha256`` (when there is one); any damage raises."""
    path = Path(path)
    sidecar = Path(f"{path}{CHECKSUM_SUFFIX}")
    if sidecar.is_file():
        expected = (sidecar.read_text().split() or [""])[0]
        if sha256_of(path) != expected:
            raise ValueError(f"sha256 differs from {sidecar.name}")
    state = load(path)
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise ValueError("not a training checkpoint")
    return state


def _problem(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]


def newest_intact(
    folder_or_file: str | Path, log: Callable[[str], None], move_aside: bool = True
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads and matches its checksum, with its state; ``None`` if there is none.

    ``folder_or_file``: a run directory or one ``.pt`` file (named by ``load_path``: never moved). Each
    damaged checkpoint of a run directory is reported in one line and renamed ``step_X.pt.damaged``
    (with its checksum), never deleted (``move_aside=False``: only skipped). Damage with nothing intact
    left raises :class:`CheckpointError`.
    """
    target = Path(folder_or_file)
    candidates = [target] if target.is_file() else list(reversed(list_checkpoints(target)))
    damaged = []
    for path in candidates:
        try:
            return path, verified_load(path)
        except Exception as err:  # noqa: BLE001 - any failure to read a checkpoint means it is damaged
            problem = _problem(err)
        if target.is_file():
            raise CheckpointError(
                f"checkpoint {path} is damaged ({problem}); point load_path at another checkpoint or run directory"
            )
        damaged.append(path)
        if not move_aside:  # another run's directory (load_path): reported and skipped, left in place
            log(f"[yellow]checkpoint {path} is damaged ({problem}): skipped[/yellow]")
            continue
        aside = path.with_name(path.name + DAMAGED_SUFFIX)
        os.replace(path, aside)
        sidecar = Path(f"{path}{CHECKSUM_SUFFIX}")
        if sidecar.exists():
            os.replace(sidecar, Path(f"{aside}{CHECKSUM_SUFFIX}"))
        log(f"[yellow]checkpoint {path} is damaged ({problem}): moved aside to {aside.name}[/yellow]")
    if damaged:
        raise CheckpointError(
            f"no intact checkpoint in {target} ({len(damaged)} damaged); "
            "start a new run_dir, or set load_path to a good checkpoint (init_from=<export> keeps trained weights)"
        )
    return None


def save_run(
    cfg: TrainConfig,
    info: dist.DistInfo,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    step: int,
    skip_counter: SkipCounter,
    nonfinite_total: int,
    log: Callable[[str], None],
) -> None:
    """Checkpoint the run after ``step`` optimizer steps; collective: every rank calls it, rank 0 writes."""
    rng = dist.all_gather_objects(rng_state())  # every rank's RNG, restored per rank on resume
    if info.is_main:
        state = {
            "step": step,
            "model": model.trainable_state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng,
            "data": {
                "skipped": dict(skip_counter.counts),
                "samples": skip_counter.samples,
                "truncated": skip_counter.truncated,
            },
            "nonfinite_total": nonfinite_total,
            "config": dataclasses.asdict(cfg),
        }
        path = save(checkpoint_path(cfg.run_dir, step), state, keep_last=cfg.trainer.keep_last)
        log(f"[dim]checkpoint {path}[/dim]")
    dist.barrier()


def restore_run(
    state: dict[str, Any],
    info: dist.DistInfo,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    skip_counter: SkipCounter,
) -> tuple[int, int]:
    """Load a :func:`save_run` state into the live run; returns ``(step, nonfinite_total)``."""
    model.load_state_dict(state["model"], strict=False)  # trainable weights only; the frozen LM is as built
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    skip_counter.add(state["data"]["skipped"])
    skip_counter.samples, skip_counter.truncated = state["data"]["samples"], state["data"]["truncated"]
    if len(state["rng"]) == info.world_size:  # same world size: restore each rank's own RNG
        set_rng_state(state["rng"][info.rank])
    return state["step"], state["nonfinite_total"]
