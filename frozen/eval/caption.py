"""Captioning: the images of a shard split, captioned greedily per condition and scored against
every reference (BLEU-4, CIDEr), and the perplexity of the reference captions given the image (or a
black image). Rows: ``shots`` = 0.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch

from frozen.config import CaptionTaskConfig
from frozen.core import dist
from frozen.data.collate import Collator
from frozen.errors import DataError
from frozen.eval.answer import Query, skip_text
from frozen.eval.context import EvalContext
from frozen.eval.metrics import caption_scores
from frozen.model.loss import summed_token_loss
from frozen.model.prompts import IMAGE_MARKER


def caption_queries(items: Sequence[Any], task: CaptionTaskConfig, *, condition: str,
                    start_text: str) -> Iterator[Query]:
    """``<image>{caption_prompt}``; ``no_image`` starts from ``caption_prompt`` or, when that is
    empty, ``start_text`` (the LM's BOS/EOS), with no image."""
    for ex in items:
        refs = list(ex.meta.get("captions") or [])
        if condition == "no_image":
            prompt, images = task.caption_prompt or start_text, []
        else:
            prompt, images = IMAGE_MARKER + task.caption_prompt, [ex.image]
        yield Query(id=ex.key, prompt=prompt, images=images, target=refs)


def run_caption(name: str, task: CaptionTaskConfig, ctx: EvalContext) -> None:
    """BLEU-4 and CIDEr against every reference caption per condition; perplexity with the image."""
    if not task.shards:
        raise DataError(f"task {name}: set shards= (a shard pattern relative to data_root={ctx.cfg.data_root})")
    items = ctx.items(task)
    tok = ctx.model.tokenizer
    settings = {"shots": 0}
    for condition in task.conditions:
        if condition == "text_demos":
            continue  # captioning has no demonstrations
        queries = caption_queries(items, task, condition=condition, start_text=tok.bos_token or tok.eos_token)
        records, skipped = ctx.answerer.answer(queries, task, condition)
        n = len(records)
        scores = caption_scores({r["id"]: r["target"] for r in records},
                                {r["id"]: [r["prediction"]] for r in records}) if records else {}
        ctx.store.keep(name, settings, condition, 0, records)
        for metric in ("BLEU-4", "CIDEr"):
            ctx.store.add_row(name, metric, condition, [scores[metric]] if records else [], n, settings, skipped)
        ctx.log(f"{name} {condition}: BLEU-4 {scores.get('BLEU-4', float('nan')):.3f} "
                f"CIDEr {scores.get('CIDEr', float('nan')):.3f} (n={n}{skip_text(skipped)})")
    for condition in ("image", "black_images"):
        if condition in task.conditions:
            n = sum(dist.all_gather_objects(len(items)))
            ppl = perplexity(ctx, items, black=condition == "black_images")
            ctx.store.add_row(name, "perplexity", condition, [ppl], n, settings)


@torch.no_grad()
def perplexity(ctx: EvalContext, items: list[Any], black: bool = False) -> float:
    """exp(summed caption-token cross-entropy / number of caption tokens) with the image prefix
    (of a black image when ``black``), over all ranks' items: a per-token mean, not a mean of
    per-caption perplexities."""
    collate = Collator(ctx.model.tokenizer, ctx.text.max_length)
    totals = torch.zeros(2, dtype=torch.float64)  # [summed CE, target tokens]
    ctx.model.eval()
    for start in range(0, len(items), ctx.cfg.batch_size):
        batch = collate(items[start : start + ctx.cfg.batch_size])
        if black:
            batch["images"] = torch.zeros_like(batch["images"])  # [B, 3, S, S]
        summed, n = summed_token_loss(ctx.model, batch, ctx.autocast)
        totals += torch.tensor([summed, n], dtype=torch.float64)
    totals = dist.all_reduce_sum(totals.to(ctx.info.device)).cpu()
    return math.exp(min(50.0, (totals[0] / totals[1].clamp(min=1)).item()))
