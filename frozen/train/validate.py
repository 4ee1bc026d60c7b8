"""The validation pass run every ``trainer.val_every`` steps and at the end of training.

Mean caption-token loss over ``val_batches`` batches of ``data.val_shards`` per rank (summed over
all ranks before dividing), and a few sample captions generated on rank 0 for the console and the
W&B table. Rank 0 also writes ``run_dir/validation.json`` (the latest pass: its step, the loss as a
results row with each batch's loss, the validation protocol and the LM's size), what ``make compare``
reads from a training run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from frozen.config import TrainConfig
from frozen.core import dist
from frozen.core.logging import RunLogger
from frozen.data.pipeline import build_eval_loader
from frozen.errors import write_error
from frozen.model.frozen_model import FrozenModel
from frozen.model.loss import summed_token_loss

VALIDATION_NAME = "validation.json"


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
        data_root=cfg.data_root,
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
    per_batch = torch.zeros(info.world_size, max(t.val_batches, 1), 2, device=info.device)  # [rank, batch, (CE, n)]
    for i, batch in enumerate(batches):
        summed, n = summed_token_loss(model, {**batch, "labels": batch["labels"].to(info.device)}, autocast)
        loss_sum += torch.tensor([summed, n], device=info.device)
        per_batch[info.rank, i] = torch.tensor([summed, n], device=info.device)
        if len(samples) < t.num_sample_captions:
            samples += list(zip(batch["images"], batch["texts"]))[: t.num_sample_captions - len(samples)]
    dist.all_reduce_sum(loss_sum)
    dist.all_reduce_sum(per_batch)
    val_loss = (loss_sum[0] / loss_sum[1].clamp(min=1)).item()
    if info.is_main and cfg.run_dir:
        write_validation(cfg, model, step, val_loss, int(loss_sum[1].item()), per_batch.flatten(0, 1).tolist())
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


def write_validation(cfg: TrainConfig, model: FrozenModel, step: int, loss: float, tokens: int,
                     batches: list[list[float]]) -> Path:
    """``run_dir/validation.json``: the loss as a results row (``batch_losses``: each batch's mean token
    loss, every rank's), the validation protocol and the LM's parameter count; replaced atomically."""
    losses = [summed / n for summed, n in batches if n > 0]
    spread = (sum((x - sum(losses) / len(losses)) ** 2 for x in losses) / (len(losses) - 1)) ** 0.5 \
        if len(losses) > 1 else 0.0
    row = {"task": "validation", "metric": "caption_loss", "condition": "image", "mean": loss, "stddev": spread,
           "num_examples": tokens, "num_trials": 1, "batch_losses": losses}
    protocol: dict[str, Any] = {"val_shards": cfg.data.val_shards, "val_batches": cfg.trainer.val_batches,
                                "batch_size": cfg.per_gpu_batchsize or 16, "batches_scored": len(losses),
                                "caption_template": cfg.data.caption_template, "max_length": cfg.data.max_length}
    record = {"step": step, "rows": [row], "protocol": {"validation": protocol},
              "lm_num_parameters": sum(p.numel() for p in model.lm.parameters())}
    path = Path(cfg.run_dir) / VALIDATION_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(path.name + ".tmp").write_text(json.dumps(record, indent=2) + "\n")
        os.replace(path.with_name(path.name + ".tmp"), path)
    except OSError as err:
        raise write_error(path, err) or err
    return path
