"""The training loop: one readable function, nanoGPT style, for 1 process, torchrun or spawned workers.

``train()`` reads top to bottom: setup (process group, model, optimizer), resume (``resume``),
steps (``step.train_step``, periodic ``validate`` and ``checkpoint``), export. Per optimizer step:
``accum`` micro-batches per process, each ``[B_micro, 3, S, S]`` images and ``[B_micro, T]`` tokens;
the loss is summed over caption tokens and divided by the number of target tokens in the whole
global batch (all ranks, all micro-steps), so N processes of batch b compute the same update as one
process of batch N*b. Gradients flow through the frozen LM into the mapper and the encoder; the
optimizer only holds those trainable parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from frozen.config import TrainConfig, accumulation_steps, validate_train_config
from frozen.core import dist
from frozen.core.logging import RunLogger
from frozen.core.precision import autocast_context, resolve_precision
from frozen.data.interleave import uses_slot_layout
from frozen.data.pipeline import build_train_loader
from frozen.errors import FrozenError, write_error
from frozen.model.export import TrainingFacts
from frozen.model.frozen_model import FrozenModel
from frozen.train import checkpoint as ckpt
from frozen.train import resume
from frozen.train.compiled import check_compile, compile_model
from frozen.train.flops import lm_matmul_params, peak_tflops, vision_flops_per_image
from frozen.train.fsdp import resident_lm_bytes, shard_lm
from frozen.train.preempt import Preemption
from frozen.train.step import train_step
from frozen.train.throughput import StepFlops, Throughput
from frozen.train.validate import validate


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


def train(cfg: TrainConfig, checked: bool = False) -> dict[str, Any]:
    """Train, checkpoint and export one run; returns final metrics. Re-entrant (Hydra multirun).

    ``checked=True``: the caller already ran :func:`frozen.preflight.check_train` on this config,
    which holds the value check; otherwise it runs here, before anything is built.
    """
    if not checked:
        validate_train_config(cfg)
    cfg = dataclasses.replace(cfg, run_dir=cfg.run_dir or "outputs/run")
    t = cfg.trainer
    # ------------------------------------------------------------------ setup
    info = dist.init(t.device)
    device = info.device
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.compile:
        check_compile(device)  # one line before anything loads: no C++ compiler (CPU) or no Triton (CUDA)
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
    slots = cfg.data.packing or uses_slot_layout(cfg.data) or False  # the LM must take prefix slots inside rows
    model = FrozenModel(cfg.model, cfg.lm, lm_on_meta=fsdp, packing=slots)
    model = shard_lm(model, info, precision, cpu_offload=t.fsdp_cpu_offload) if fsdp else model.to(device)
    if t.activation_checkpointing:
        model.enable_activation_checkpointing()
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    # ------------------------------------------------------------------ resume
    resume_from, start_step, skip_counter, nonfinite_total = resume.start_point(cfg, info, model, optimizer, scaler)
    if t.compile:
        compile_model(model)  # the whole training forward, in place: state_dict keys stay unchanged
    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if info.enabled else model

    # ------------------------------------------------------------------ data
    # Exact resume: each process skips the micro-batches it consumed before the checkpoint.
    loader = build_train_loader(
        cfg.data,
        model.tokenizer,
        data_root=cfg.data_root,
        image_size=cfg.model.image_size,
        batch_size=micro_bs,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        skip_batches=start_step * accum,
        num_prefix_tokens=cfg.model.num_prefix_tokens,
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
        config=dataclasses.asdict(cfg),
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
    peak = peak_tflops(device, t.peak_tflops)
    step_flops = StepFlops(  # counted only where MFU is reported (a peak is known): one eval-mode forward
        n_lm=lm_matmul_params(model.lm),
        n_mapper=sum(p.numel() for p in model.mapper.parameters()),
        vision_flops_per_image=vision_flops_per_image(model.vision, cfg.model.image_size, device),
        lm_weight_grads=cfg.lm.trainable or cfg.lm.from_scratch,
    ) if peak else None
    throughput = Throughput(
        cfg.model.num_prefix_tokens, device=device, world_size=info.world_size, step_flops=step_flops, peak_tflops=peak
    )
    save_checkpoint = functools.partial(ckpt.save_run, cfg, info, model, optimizer, scaler, log=logger.print)

    # ------------------------------------------------------------------ steps
    model.train()
    consecutive_nonfinite, loss_value, step = 0, float("nan"), start_step
    preemption = Preemption(t.preempt_signals, info, device)
    try:
        preemption.__enter__()  # handlers only set a flag, read once per step below
        throughput.start()  # each log line's rates cover everything since the previous one
        for step in range(start_step, t.max_steps):
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro_batches = [next(batches) for _ in range(accum)]
            for b in micro_batches:
                skip_counter.update(b)
            throughput.add(micro_batches)
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
                    save_checkpoint(step, skip_counter, nonfinite_total)
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
                metrics = {
                    "loss": global_loss.item(),
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    **throughput.metrics(),  # img/s, tok/s, padding (+ mfu) since the previous log line
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
                save_checkpoint(done, skip_counter, nonfinite_total)
            if done < t.max_steps and preemption.requested():  # the same answer on every rank
                if not (t.ckpt_every and done % t.ckpt_every == 0):
                    save_checkpoint(done, skip_counter, nonfinite_total)
                stopped = preemption.stop(done, str(ckpt.checkpoint_path(run_dir, done)))
                logger.print(f"[yellow]{stopped}[/yellow]")
                raise stopped

        # ------------------------------------------------------------------ export
        final_step = max(t.max_steps, start_step)
        save_checkpoint(final_step, skip_counter, nonfinite_total)
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
            try:
                model.save_pretrained(export, training=facts)
            except OSError as err:  # the final checkpoint is written: a relaunch only exports again
                raise write_error(export, err, ckpt.RELAUNCH) or err
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
        preemption.__exit__()
        logger.finish()
        dist.cleanup()
