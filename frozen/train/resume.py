"""Where a run starts: its latest checkpoint (or ``load_path``), a trained export (``init_from``), or step 0.

A checkpoint is the newest intact one (damaged ones are moved aside, :mod:`frozen.train.checkpoint`).
It only continues the same model and LM settings and the same batches (shards, order, batch split,
world size, seed, the text and pixels of each example, the blind ablation): every such change is
refused, all of them in one error. Other changes (lr, schedule, logging, checkpoint cadence,
max_steps) keep the resume exact from that step on: they are listed in the log and appended to
``<run_dir>/resume_changes.jsonl``. An export (``init_from``) only has to have the same model and LM.
"""

from __future__ import annotations

import dataclasses
import json
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

RESUME_CHANGES = "resume_changes.jsonl"  # in the run dir: one line per resume with changed settings
_SAME_MODEL = ("model", "lm")  # a checkpoint only continues the model and LM it was trained with
_NOT_SETTINGS = {"run_dir", "load_path"}  # where the run is, not how it trains
# Settings that fix the order, the split or the content of the training batches: a resume with another
# value would not continue the run an uninterrupted one would have been (refused; the world size too).
# Each is tested (tests/train/test_resume_rules.py); a new config key is classified here or below.
_DATA_ORDER_KEYS = (
    ("data", "train_shards"),  # which samples
    ("data_root",),  # where the patterns point: other files
    ("data", "shuffle_buffer"),  # the shuffled order
    ("data", "num_workers"),  # each worker reads its own shards: the interleaving of samples
    ("data", "per_image_caption"),  # which caption of a sample is trained on
    ("data", "max_length"),  # where captions are truncated: other target tokens (and packed row width)
    ("data", "caption_template"),  # the text a caption becomes: other tokens
    ("data", "vqa_prompt"),  # the same for a VQA sample's prompt
    ("data", "vqa_target"),  # and its answer
    ("data", "jpeg_draft"),  # reduced-scale vs full JPEG decode: other pixels
    ("data", "packing"),  # which captions share a row: other batches (and other float sums)
    # the interleaved layouts (frozen.data.interleave): what each caption is predicted from
    ("data", "interleave"),  # pairs in one causal context vs one pair per row
    ("data", "interleave_separator"),  # the text that ends a pair: other targets
    ("data", "lead_text"),  # a fixed text before every prefix: other positions and context
    ("data", "text_before_image"),  # another example's line before an image: other context
    ("trainer", "batch_size"),  # samples per step
    ("trainer", "blind"),  # zeroed images: half a run would be neither the ablation nor the model
    ("per_gpu_batchsize",),  # the micro-batch split (accumulation order of the sums)
    ("num_gpus",),  # the per-rank streams and their split
    ("num_nodes",),
    ("seed",),  # the shuffle and every rank's RNG
)
# The other keys keep the batches an uninterrupted run would have seen from the checkpoint on: a change
# there is the user's choice from that step (listed in the log and in resume_changes.jsonl), e.g.
# data.val_shards (validation only), data.prefetch_factor (batches in flight, not which), trainer.lr /
# schedule / betas / precision / strategy / compile, logging, validation and checkpoint cadence, max_steps.


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
        _check_compatible(state, cfg, info, resume_from, log=console.print)
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


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 1}}`` -> ``{"trainer.lr": 1}``."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _breaks_exact_resume(key: str) -> bool:
    return key.split(".")[0] in _SAME_MODEL or any(key == ".".join(k) for k in _DATA_ORDER_KEYS)


def _check_compatible(
    state: dict[str, Any], cfg: TrainConfig, info: dist.DistInfo, path: Path, log: Callable[[str], None]
) -> None:
    """Refuse changed settings that break exact resume (all of them in one error); list and record the others."""
    saved, now = _flat(state["config"]), _flat(dataclasses.asdict(cfg))
    changed = {
        key: (saved.get(key), now.get(key))
        for key in sorted(saved.keys() | now.keys())
        if saved.get(key) != now.get(key) and key not in _NOT_SETTINGS
    }
    refused = [f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items() if _breaks_exact_resume(key)]
    if len(state["rng"]) != info.world_size:  # one RNG state per rank was saved
        refused.append(f"world size {len(state['rng'])} -> {info.world_size}")
    if refused:
        raise FrozenConfigError(
            f"cannot resume from {path}: {len(refused)} setting(s) that fix the model or the batch order differ "
            f"from the checkpoint (saved -> now): {', '.join(refused)}; resume with the saved values, or start a "
            "new run_dir (init_from=<its export> starts from the trained weights)"
        )
    if changed and info.is_main:
        listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
        log(f"[yellow]resuming from {path} at step {state['step']} with changed settings: {listed}[/yellow]")
        record = {"step": state["step"], "checkpoint": str(path), "changes": {k: list(v) for k, v in changed.items()}}
        Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(cfg.run_dir) / RESUME_CHANGES, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
