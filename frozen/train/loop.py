"""The training loop: one readable function, nanoGPT style, for 1 process, torchrun or spawned workers.

Per optimizer step: ``accum`` micro-batches per process, each ``[B_micro, 3, S, S]`` images and
``[B_micro, T]`` tokens; the loss is summed over caption tokens and divided by the number of target
tokens in the whole global batch (all ranks, all micro-steps), so N processes of batch b compute
the same update as one process of batch N*b. Gradients flow through the frozen LM into the mapper
and the encoder; the optimizer only holds those trainable parameters.

Over ~300 lines because the loop is one function on purpose (read top to bottom: setup, resume,
steps, checkpoint, export), with its validation pass and the resume-compatibility check beside it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from frozen.config import TrainConfig, accumulation_steps, validate_train_config
from frozen.core import dist
from frozen.core.logging import RunLogger, console
from frozen.core.precision import autocast_context, resolve_precision
from frozen.data.pipeline import SkipCounter, build_eval_loader, build_train_loader
from frozen.errors import FrozenConfigError, FrozenError
from frozen.model.export import CONFIG_NAME, WEIGHTS_NAME, TrainingFacts, resolve_export
from frozen.model.frozen_model import FrozenModel
from frozen.model.loss import summed_token_loss
from frozen.train import checkpoint as ckpt
from frozen.train.fsdp import check_strategy, resident_lm_bytes, shard_lm
from frozen.train.step import train_step


class NonFiniteLossError(FrozenError, RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


def lr_at(step: int, cfg) -> float:
    """Linear warmup, then constant (the paper) or cosine decay to ``min_lr_ratio * lr``."""
    t = cfg.trainer
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return t.lr
    progress = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train, checkpoint and export one run; returns final metrics. Re-entrant (Hydra multirun)."""
    validate_train_config(cfg)
    check_strategy(cfg)
    cfg = dataclasses.replace(cfg, run_dir=cfg.run_dir or "outputs/run")
    t = cfg.trainer
    # ------------------------------------------------------------------ setup
    info = dist.init(t.device)
    device = info.device
    if t.threads:
        torch.set_num_threads(t.threads)
    micro_bs, accum = accumulation_steps(cfg, info.world_size)
    precision = resolve_precision(t.precision, device)
    autocast = autocast_context(precision, device)
    run_dir = Path(cfg.run_dir)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)

    # ------------------------------------------------------------------ model + optimizer
    fsdp = t.strategy == "fsdp" and info.enabled  # one process: nothing to shard over
    # fsdp: the LM is built without weights; shard_lm gives each rank its shards of rank 0's weights.
    model = FrozenModel(cfg.model, cfg.lm, lm_on_meta=fsdp)
    model = shard_lm(model, info, precision, cpu_offload=t.fsdp_cpu_offload) if fsdp else model.to(device)
    if t.activation_checkpointing:
        model.enable_activation_checkpointing()
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    # ------------------------------------------------------------------ resume
    resume_from = ckpt.resolve_load_path(cfg.load_path) if cfg.load_path else ckpt.latest_checkpoint(run_dir)
    start_step, skip_counter, nonfinite_total = 0, SkipCounter(), 0
    if resume_from is not None:
        state = ckpt.load(resume_from)
        _check_compatible(state["config"], cfg, resume_from, log=console.print if info.is_main else (lambda *_: None))
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_step, nonfinite_total = state["step"], state["nonfinite_total"]
        skip_counter.add(state["data"]["skipped"])
        skip_counter.samples, skip_counter.truncated = state["data"]["samples"], state["data"]["truncated"]
        if len(state["rng"]) == info.world_size:  # same world size: restore each rank's own RNG
            ckpt.set_rng_state(state["rng"][info.rank])
    elif cfg.init_from:
        # Fine-tuning: a trained export's vision + mapper weights, fresh optimizer, step 0. A restart
        # of this run resumes from its own checkpoint above and never reads init_from again.
        source = resolve_export(cfg.init_from)
        saved = json.loads((source / CONFIG_NAME).read_text())
        _check_same_model(saved, _plain_config(cfg), source, "start from it with")
        model.load_trainable_state(source / WEIGHTS_NAME)
        if info.is_main:
            console.print(f"initialised from {source} (weights only: fresh optimizer, step 0)")
    if t.compile:
        model.vision.compile()  # in place: state_dict keys stay unchanged
    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if info.enabled else model

    # ------------------------------------------------------------------ data
    # Exact resume: each process skips the micro-batches it consumed before the checkpoint.
    loader = build_train_loader(
        cfg.data,
        model.tokenizer,
        image_size=cfg.model.image_size,
        batch_size=micro_bs,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        skip_batches=start_step * accum,
    )
    batches = iter(loader)

    logger = RunLogger(
        run_dir,
        active=info.is_main,
        backend=cfg.logger.backend,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        name=cfg.logger.name or cfg.name,
        tags=cfg.logger.tags,
        mode=cfg.logger.mode,
        config=_plain_config(cfg),
        total_steps=t.max_steps,
        start_step=start_step,
    )
    lm_held, lm_whole = resident_lm_bytes(model.lm)
    strategy = "fsdp" if fsdp else "ddp" if info.enabled else "1 process"
    logger.print(
        f"[bold]frozen[/bold] {cfg.lm.name} + {cfg.model.vision} k={cfg.model.num_prefix_tokens} | "
        f"{sum(p.numel() for p in params) / 1e6:.2f}M trainable | {info.world_size} proc x {micro_bs} x {accum} "
        f"accum = batch {t.batch_size} | {precision} on {device.type} | {strategy} (LM held by rank 0: "
        f"{lm_held / 2**20:.1f} of {lm_whole / 2**20:.1f} MiB) | run dir {run_dir}"
        + (f" | resumed from {resume_from} at step {start_step}" if resume_from else "")
    )

    # ------------------------------------------------------------------ loop
    model.train()
    consecutive_nonfinite, loss_value, step = 0, float("nan"), start_step
    try:
        for step in range(start_step, t.max_steps):
            tic = time.perf_counter()
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro_batches = [next(batches) for _ in range(accum)]
            for b in micro_batches:
                skip_counter.update(b)
            result = train_step(
                ddp_model,
                optimizer,
                params,
                micro_batches,
                device=device,
                autocast=autocast,
                scaler=scaler,
                grad_clip=t.grad_clip,
                world_size=info.world_size,
                blind=t.blind,
            )
            global_loss, grad_norm, finite = result.loss, result.grad_norm, result.finite
            if not finite:
                consecutive_nonfinite += 1
                nonfinite_total += 1
                logger.print(
                    f"[yellow]step {step + 1}: non-finite loss/grad, step skipped "
                    f"({consecutive_nonfinite} in a row)[/yellow]"
                )
                if consecutive_nonfinite >= t.max_nonfinite:
                    _save_checkpoint(cfg, info, model, optimizer, scaler, step, skip_counter, nonfinite_total, logger)
                    raise NonFiniteLossError(
                        f"{consecutive_nonfinite} consecutive steps had a non-finite loss or gradient "
                        f"(last at step {step + 1}); "
                        f"checkpoint saved in {run_dir / ckpt.CKPT_DIR}: lower trainer.lr, use trainer.precision=fp32 "
                        "or bf16, or check the data"
                    )
            else:
                consecutive_nonfinite = 0
                loss_value = global_loss.item()
            done = step + 1
            if done % t.log_every == 0 or done == t.max_steps or not finite:
                elapsed = time.perf_counter() - tic
                metrics = {
                    "loss": global_loss.item(),
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "img/s": t.batch_size / elapsed,
                    "nonfinite_steps": nonfinite_total,
                    "skipped_samples": skip_counter.total(),
                }
                logger.step(done, metrics)
            else:
                logger.advance(done)
            if t.val_every and done % t.val_every == 0 and done < t.max_steps:
                validate(cfg, model, info, logger, done, autocast)
                model.train()
            if t.ckpt_every and done % t.ckpt_every == 0 and done < t.max_steps:
                _save_checkpoint(cfg, info, model, optimizer, scaler, done, skip_counter, nonfinite_total, logger)

        # ------------------------------------------------------------------ finish
        final_step = max(t.max_steps, start_step)
        _save_checkpoint(cfg, info, model, optimizer, scaler, final_step, skip_counter, nonfinite_total, logger)
        val = validate(cfg, model, info, logger, final_step, autocast) if t.val_every else {}
        export = run_dir / "export"
        if info.is_main:
            facts = TrainingFacts(
                steps=final_step,
                training_data=cfg.data.train_shards,
                batch_size=t.batch_size,
                init_from=cfg.init_from,
                trained_blind=bool(t.blind),  # evaluation reads it back from frozen_config.json
            )
            model.save_pretrained(export, training=facts)
            logger.print(f"exported to {export} | data: {skip_counter.summary()} | non-finite steps: {nonfinite_total}")
        dist.barrier()
        return {
            "loss": loss_value,
            "step": final_step,
            "export": str(export),
            "run_dir": str(run_dir),
            **val,
            "skipped_samples": skip_counter.total(),
            "nonfinite_steps": nonfinite_total,
        }
    finally:
        logger.finish()
        dist.cleanup()


@torch.no_grad()
def validate(
    cfg: TrainConfig, model: FrozenModel, info: dist.DistInfo, logger: RunLogger, step: int, autocast
) -> dict[str, float]:
    """Mean caption loss over ``val_batches`` validation batches (all ranks) + sample captions (rank 0)."""
    if not cfg.data.val_shards:
        return {}
    t = cfg.trainer
    model.eval()
    loss_sum = torch.zeros(2, device=info.device)  # [summed CE, number of target tokens]
    samples: list[tuple[torch.Tensor, str]] = []
    loader = build_eval_loader(
        cfg.data,
        model.tokenizer,
        image_size=cfg.model.image_size,
        batch_size=cfg.per_gpu_batchsize or 16,
        rank=info.rank,
        world_size=info.world_size,
    )
    batches = [batch for _, batch in zip(range(t.val_batches), loader)]
    if cfg.trainer.strategy == "fsdp" and info.enabled:
        # Sharded LM: every forward is a collective, so all ranks run the same number of batches.
        count = torch.tensor([len(batches)], device=info.device)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MIN)
        batches = batches[: int(count)]
    for batch in batches:
        summed, n = summed_token_loss(model, {**batch, "labels": batch["labels"].to(info.device)}, autocast)
        loss_sum += torch.tensor([summed, n], device=info.device)
        if len(samples) < t.num_sample_captions:
            samples += list(zip(batch["images"], batch["texts"]))[: t.num_sample_captions - len(samples)]
    dist.all_reduce_sum(loss_sum)
    val_loss = (loss_sum[0] / loss_sum[1].clamp(min=1)).item()
    metrics = {"val/loss": val_loss, "val/perplexity": math.exp(min(val_loss, 50))}
    if samples and cfg.trainer.strategy == "fsdp" and info.enabled:
        # Generation on rank 0 alone would wait forever for the other ranks' shards.
        logger.print(
            f"[cyan]step {step} val loss {val_loss:.3f}[/cyan] (no sample captions under trainer.strategy=fsdp: "
            "caption the export with evaluate.py, which holds the LM whole on each process)"
        )
    elif info.is_main and samples:
        captions = model.generate(
            [[img] for img, _ in samples], ["<image>"] * len(samples), max_new_tokens=20, stop_strings=["\n"]
        )
        logger.print(f"[cyan]step {step} val loss {val_loss:.3f}[/cyan]")
        for (_, ref), gen in list(zip(samples, captions))[:4]:
            logger.print(f"  [dim]ref[/dim] {ref.strip()!r:40}  [dim]gen[/dim] {gen!r}")
        images = [(img.permute(1, 2, 0).clamp(0, 1) * 255).byte().cpu().numpy() for img, _ in samples]
        logger.table(
            "val/samples",
            step,
            ["image", "reference", "generated"],
            [[im, r, g] for im, (_, r), g in zip(images, samples, captions)],
        )
    logger.event(step, metrics)
    return metrics


def _save_checkpoint(cfg, info, model, optimizer, scaler, step, skip_counter, nonfinite_total, logger) -> None:
    rng = dist.all_gather_objects(ckpt.rng_state())  # every rank's RNG, restored per rank on resume
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
            "config": _plain_config(cfg),
        }
        path = ckpt.save(ckpt.checkpoint_path(cfg.run_dir, step), state, keep_last=cfg.trainer.keep_last)
        logger.print(f"[dim]checkpoint {path}[/dim]")
    dist.barrier()


def _plain_config(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain containers (W&B config, checkpoint metadata)."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


# Settings that fix the order of training batches: changing one keeps the run resumable, but the
# continuation then reads other batches than the uninterrupted run would have.
_DATA_ORDER_KEYS = (
    ("data", "train_shards"),
    ("data", "data_root"),
    ("data", "shuffle_buffer"),
    ("data", "num_workers"),
    ("trainer", "batch_size"),
    ("per_gpu_batchsize",),
    ("num_gpus",),
    ("num_nodes",),
    ("seed",),
)


def _check_same_model(saved: dict[str, Any], now: dict[str, Any], path: Path, action: str) -> None:
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


def _check_compatible(saved: dict[str, Any], cfg: TrainConfig, path: Path, log) -> None:
    """A checkpoint only resumes the same model (error); other data order settings only warn."""
    now = _plain_config(cfg)
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
