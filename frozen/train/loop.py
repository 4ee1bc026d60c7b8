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

from frozen.config import TrainConfig, accumulation_steps, prefix_in_rows, validate_train_config
from frozen.core import dist
from frozen.core.logging import RunLogger
from frozen.core.precision import autocast_context, resolve_precision
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
from frozen.train.records import NonFiniteCount, PendingSteps
from frozen.train.step import adamw, train_step
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
    info = dist.init(t.device, t.dist_timeout_s)
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
    model = FrozenModel(cfg.model, cfg.lm, lm_on_meta=fsdp, packing=prefix_in_rows(cfg.data) is not None)
    model = shard_lm(model, info, precision, cpu_offload=t.fsdp_cpu_offload) if fsdp else model.to(device)
    if t.activation_checkpointing:
        model.enable_activation_checkpointing()
    params = model.trainable_parameters()
    optimizer = adamw(params, fused=t.fused_optimizer, lr=t.lr, betas=tuple(t.betas), eps=t.eps,
                      weight_decay=t.weight_decay)
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
    # The host reads the steps' device values (loss, grad norm, non-finite flag) only where it needs them:
    # logging and checkpoint steps, preemption checks (docs/host_syncs.md). Between them it queues steps.
    model.train()
    loss_value, step = float("nan"), start_step
    nonfinite = NonFiniteCount(limit=t.max_nonfinite, total=nonfinite_total)
    pending = PendingSteps()
    preemption = Preemption(t.preempt_signals, info, device)
    try:
        preemption.__enter__()  # handlers only set a flag, read below
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
            done = step + 1
            pending.add(done, lr, skip_counter.total(), result)
            log_now = done % t.log_every == 0 or done == t.max_steps
            ckpt_now = bool(t.ckpt_every and done % t.ckpt_every == 0 and done < t.max_steps)
            # One process reads its own signal flag (a host bool) every step; ranks agree on theirs with a
            # collective every preempt_check_every steps, read together with the step records.
            check_now = bool(preemption.signals) and done < t.max_steps and (
                not info.enabled or done % t.preempt_check_every == 0)
            preempted = False
            if log_now or ckpt_now or (check_now and (info.enabled or preemption.received is not None)):
                flag = preemption.reduced_flag() if check_now and info.enabled else None
                records, (totals, flag_value) = pending.read(throughput.pending_totals() if log_now else None, flag)
                preempted = check_now and (flag_value[0] > 0 if flag_value else preemption.received is not None)
                for r in records:
                    nonfinite.update(r)
                    if r.nonfinite:
                        logger.print(f"[yellow]step {r.step}: non-finite loss/grad, step skipped "
                                     f"({nonfinite.in_a_row} in a row)[/yellow]")
                    else:
                        loss_value = r.loss
                    if r.nonfinite or (r.step == done and log_now):  # skipped steps get a line each, as logged
                        metrics = {"loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm}
                        if r.step == done and log_now:
                            metrics.update(throughput.metrics(totals))  # img/s, tok/s, padding (+ mfu) since last
                        logger.step(r.step, {**metrics, "nonfinite_steps": nonfinite.total,
                                             "skipped_samples": r.skipped_samples})
                nonfinite_total = nonfinite.total
                if nonfinite.stop is not None:
                    in_a_row, last = nonfinite.stop
                    # A skipped last step leaves the weights of the step before it (as when read at once).
                    save_checkpoint(done - 1 if records[-1].nonfinite else done, skip_counter, nonfinite_total)
                    seen = "" if last == done else f", read at step {done} (the flag is read on logging steps)"
                    raise NonFiniteLossError(
                        f"{in_a_row} consecutive steps had a non-finite loss or gradient (last at step {last}{seen}); "
                        f"checkpoint saved in {run_dir / ckpt.CKPT_DIR}: lower trainer.lr, use trainer.precision=fp32 "
                        "or bf16, or check the data"
                    )
            logger.advance(done)
            if t.val_every and done % t.val_every == 0 and done < t.max_steps:
                validate(cfg, model, info, logger, done, autocast)
                model.train()
            if ckpt_now:
                save_checkpoint(done, skip_counter, nonfinite_total)
            if preempted:  # the same answer on every rank
                if not ckpt_now:
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
    except RuntimeError as err:  # a rank died or hung: one line naming it instead of gloo/NCCL's traceback
        lost = dist.lost_peer(err, info, step)
        if lost is None:
            raise
        raise lost from None
    finally:
        preemption.__exit__()
        logger.finish()
        dist.cleanup()
