"""The caption loss as a (sum, count) pair, so that averages over batches and ranks are per token."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch


@torch.no_grad()
def summed_token_loss(
    model: torch.nn.Module, batch: dict[str, Any], autocast: AbstractContextManager | None = None
) -> tuple[float, int]:
    """``(summed cross-entropy over the batch's target tokens, number of target tokens)``.

    ``batch`` is a collated batch (``images [B, 3, S, S]``, ``input_ids / attention_mask / labels
    [B, T]``, -100 = ignored). Summing these pairs over batches (and ranks) and dividing once gives
    the per-token mean; averaging per-batch means would weight short batches like long ones.
    """
    labels = batch["labels"]
    n = int((labels != -100).sum())
    with autocast if autocast is not None else nullcontext():
        out = model(
            batch["images"], batch["input_ids"], batch["attention_mask"], labels=labels, num_items_in_batch=max(n, 1)
        )
    return out.loss.float().item() * n, n
