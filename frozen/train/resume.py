"""Where a run starts: its latest checkpoint (or ``load_path``), a trained export (``init_from``), or step 0.

A checkpoint or export only continues the same model and LM settings (an error otherwise); a
changed setting that fixes the batch order only warns, because the run continues correctly, on
other batches than an uninterrupted run would read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch

from frozen.config import TrainConfig
from frozen.core import dist
from frozen.core.logging import console
from frozen.data.samples import SkipCounter
from frozen.errors import FrozenConfigError
from frozen.model.export import WEIGHTS_NAME, read_config, resolve_export
from frozen.model.frozen_model import FrozenModel
from frozen.train import checkpoint as ckpt

# Settings that fix the order of training batches: changing one keeps the run resumable, but the
# continuation then reads other batches than the uninterrupted run would have.
_DATA_ORDER_KEYS = (
    ("data", "train_shards"),
    ("data_root",),
    ("data", "shuffle_buffer"),
    ("data", "num_workers"),
    ("trainer", "batch_size"),
    ("per_gpu_batchsize",),
    ("num_gpus",),
    ("num_nodes",),
    ("seed",),
)


def start_point(
    cfg: TrainConfig,
    info: dist.DistInfo,
    model: FrozenModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> tuple[Path | None, int, SkipCounter, int]:
    """Restore the run's checkpoint or initialise from ``init_from``, in place.

    Returns ``(checkpoint resumed from or None, start step, skip counter, non-finite steps so far)``.
    """
    resume_from, state = _intact_checkpoint(cfg, info)
    skip_counter = SkipCounter()
    if resume_from is not None:
        _check_compatible(state["config"], cfg, resume_from, log=console.print if info.is_main else (lambda *_: None))
        start_step, nonfinite_total = ckpt.restore_run(state, info, model, optimizer, scaler, skip_counter)
        return resume_from, start_step, skip_counter, nonfinite_total
    if cfg.init_from:
        # Fine-tuning: a trained export's vision + mapper weights, fresh optimizer, step 0. A restart
        # of this run resumes from its own checkpoint above and never reads init_from again.
        source = resolve_export(cfg.init_from)
        saved = read_config(source)
        _check_same_model(saved, dataclasses.asdict(cfg), source, "start from it with")
        model.load_trainable_state(source / WEIGHTS_NAME)
        if info.is_main:
            console.print(f"initialised from {source} (weights only: fresh optimizer, step 0)")
    return None, 0, skip_counter, 0


def _intact_checkpoint(cfg: TrainConfig, info: dist.DistInfo) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest intact checkpoint and its state, or ``(None, None)``.

    Rank 0 checks the checkpoints and moves damaged ones of this run aside; the others then load
    the one it found (or raise its error, so that no rank waits for the others).
    """
    found: Path | Exception | None = None
    state = None
    if info.is_main:
        try:
            source = Path(cfg.run_dir)
            if cfg.load_path:
                ckpt.resolve_load_path(cfg.load_path)  # a missing path or an empty run directory: its error
                source = Path(cfg.load_path).expanduser()
            found, state = ckpt.newest_intact(source, console.print, move_aside=not cfg.load_path) or (None, None)
        except (ckpt.CheckpointError, FileNotFoundError) as err:
            found = err
    if info.enabled:
        found = dist.all_gather_objects(found)[0]
    if isinstance(found, Exception):
        raise found
    if found is not None and state is None:
        state = ckpt.verified_load(found)
    return found, state


def _check_same_model(saved: dict[str, Any], now: dict[str, Any], path: Path, action: str) -> None:
    """Raise unless ``saved`` (a checkpoint's or export's config) has the ``model`` and ``lm`` of ``now``."""
    for section in ("model", "lm"):
        if saved.get(section) != now[section]:
            diff = {
                k: (saved.get(section, {}).get(k), v)
                for k, v in now[section].items()
                if saved.get(section, {}).get(k) != v
            }
            raise FrozenConfigError(
                f"{path} was trained with a different {section} config {diff} (saved, now); "
                f"{action} the same settings or start a new run directory"
            )


def _check_compatible(saved: dict[str, Any], cfg: TrainConfig, path: Path, log: Callable[[str], None]) -> None:
    """A checkpoint only resumes the same model (error); other data order settings only warn."""
    now = dataclasses.asdict(cfg)
    _check_same_model(saved, now, path, "resume with")
    for keys in _DATA_ORDER_KEYS:
        old, new = saved, now
        for k in keys:
            old, new = (old or {}).get(k), (new or {}).get(k)
        if old != new:
            log(
                f"[yellow]resuming with {'.'.join(keys)}={new!r} (checkpoint: {old!r}): the run continues, "
                "but on a different batch order than an uninterrupted run[/yellow]"
            )
