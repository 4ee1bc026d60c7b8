"""The ``train_packing`` entry: real caption tokens per second of one train step, packed vs padded batch.

Both sides run the training loop's own step (:func:`frozen.train.step.train_step`) on the same
``--packing-batches`` batches of 64 examples (random images, captions of real lengths; several batches,
because one batch's longest caption decides its padding): each collated by :class:`~frozen.data.collate.Collator`
(each row padded to the batch's longest caption), one by :class:`~frozen.data.packing.PackedCollator`
(rows of up to ``max_length + k`` positions, no padding computed). The real caption tokens (caption +
EOS) are the same on both sides, so the tokens/s ratio is the step-time ratio. Before timing, the
loss and the encoder/mapper gradients of the first batch, padded and packed, are compared on the same weights.

Caption lengths: drawn from a histogram of real captions' lengths in the LM's tokens
(:data:`frozen.bench.caption_lengths.CC3M_VAL_SMOLLM2`, CC3M's validation captions with SmolLM2's
tokenizer, or ``--caption-lengths FILE`` from ``scripts/caption_lengths.py``); each caption is made of
that many single-token words (:data:`WORDS`), checked to tokenise to exactly the drawn length.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import torch

from frozen.bench import lib as perf
from frozen.bench.caption_lengths import describe, load_table, token_counts
from frozen.bench.common import load_model, median, run_config, side, target
from frozen.core.precision import autocast_context, resolve_precision
from frozen.data.collate import IGNORE_INDEX, Collator, lm_positions
from frozen.data.packing import PackedCollator
from frozen.data.samples import Example
from frozen.errors import FrozenError
from frozen.train.step import train_step

# Caption words, each kept only if it is one token after a space in the LM's tokenizer.
WORDS = (
    "a man woman people two group of on in with the and is are sitting standing riding holding next to near "
    "table street dog cat plate pizza train bus kitchen bathroom toilet sink giraffe elephants zebra field "
    "grass tennis racket court baseball bat skateboard surfboard wave beach snow skis umbrella clock tower "
    "building city sign red white black large small front top while his her young little wooden"
).split()
MAX_LENGTH = 64  # data.max_length of the COCO and CC3M presets


def caption_examples(batch: int, image_size: int, counts: dict[int, int], tokenizer: Any,
                     seed: int = 0) -> list[Example]:
    """``batch`` caption examples whose token counts (caption + EOS) are drawn from ``counts``
    (length -> number of captions); one token per word, checked with ``tokenizer``."""
    words = [w for w in WORDS if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    rng = random.Random(seed)
    lengths = rng.choices(list(counts), weights=list(counts.values()), k=batch)
    targets = ["".join(" " + rng.choice(words) for _ in range(n - 1)) for n in lengths]  # n - 1 words + EOS
    got = token_counts([t[1:] for t in targets], tokenizer)
    if got != lengths:  # a tokenizer that merges across spaces would break the drawn distribution
        raise FrozenError(f"train_packing: captions tokenised to other lengths than drawn ({got[:5]} vs "
                          f"{lengths[:5]}); this LM's tokenizer joins words across spaces")
    g = torch.Generator().manual_seed(seed)
    return [
        Example(key=f"cap{i}", kind="caption", prompt="", meta={}, target=target,
                image=torch.rand(3, image_size, image_size, generator=g))
        for i, target in enumerate(targets)
    ]


def _loss_and_grads(model: Any, batch: dict[str, Any], device: torch.device, autocast: Any) -> tuple[float, list]:
    """Loss (sum over caption tokens / their count) and encoder + mapper gradients of one batch."""
    model.zero_grad(set_to_none=True)
    n = int((batch["labels"] != IGNORE_INDEX).sum())
    packed = {key: batch[key].to(device) for key in ("position_ids", "prefix_index") if key in batch}
    mask = batch.get("attention_mask")
    with autocast:
        out = model(batch["images"].to(device), batch["input_ids"].to(device),
                    None if mask is None else mask.to(device), labels=batch["labels"].to(device),
                    num_items_in_batch=n, **packed)
    out.loss.backward()
    grads = [p.grad.detach().float().clone() for p in model.trainable_parameters()]
    model.zero_grad(set_to_none=True)
    return float(out.loss.detach()), grads


def bench_train_packing(args: argparse.Namespace, lm: str) -> dict[str, Any]:
    lengths = load_table(args.caption_lengths)  # a bad file fails here, before the LM loads
    counts = {n: c for n, c in lengths["counts"].items() if c}
    device = torch.device(args.device)
    bf16 = resolve_precision("auto", device) == "bf16"
    model = load_model(args, lm, lm_dtype="bfloat16" if bf16 else "float32").train()
    autocast = autocast_context("bf16" if bf16 else "fp32", device)
    k = model.num_prefix_tokens
    batches = [caption_examples(args.packing_batch, args.image_size, counts, model.tokenizer, seed=s)
               for s in range(args.packing_batches)]
    padded = [Collator(model.tokenizer, MAX_LENGTH)(examples) for examples in batches]
    packed = [PackedCollator(model.tokenizer, MAX_LENGTH, k)(examples) for examples in batches]

    # The same weights, the same examples padded and packed: the loss and the gradients must agree.
    loss_padded, grads_padded = _loss_and_grads(model, padded[0], device, autocast)
    loss_packed, grads_packed = _loss_and_grads(model, packed[0], device, autocast)
    grad_rel = max(float((a - b).norm() / a.norm().clamp_min(1e-30)) for a, b in zip(grads_padded, grads_packed))
    loss_rel = abs(loss_packed - loss_padded) / abs(loss_padded)

    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95))

    def steps(side: list[dict[str, Any]]):  # one optimizer step per batch
        def run() -> None:
            for batch in side:
                train_step(model, optimizer, params, [batch], device=device, autocast=autocast, grad_clip=1.0)
        return run

    times = perf.interleaved({"packed": steps(packed), "padded": steps(padded)}, args.repeats, device)
    tokens = sum(b["num_text_tokens"] for b in padded)  # caption + EOS per example: the same on both sides
    rate = {name: [tokens / t for t in values] for name, values in times.items()}
    real = sum(lm_positions(b, k)[0] for b in padded)
    computed_padded, computed_packed = (sum(lm_positions(b, k)[1] for b in side) for side in (padded, packed))
    speedup = median(rate["packed"]) / median(rate["padded"])
    tolerance = 2e-2 if bf16 else 1e-4
    entry: dict[str, Any] = {
        "config": run_config(
            args, bf16, k=k, batch=args.packing_batch, batches=args.packing_batches, max_length=MAX_LENGTH,
            row_length=MAX_LENGTH + k, caption_tokens_mean=tokens / sum(map(len, batches)),
            caption_tokens_max=max(int(b["attention_mask"].sum(1).max()) for b in padded),
            caption_lengths={key: lengths[key] for key in ("source", "sha256", "tokenizer", "captions")
                             if key in lengths} | {"stats": describe(counts)},
        ),
        "project": side("packed batch: real caption tokens per second", rate["packed"], "tok/s"),
        "baseline": side("padded batch: real caption tokens per second", rate["padded"], "tok/s"),
        "ratio": speedup,
        "speedup": speedup,
        "steps_s": {name: median(values) for name, values in times.items()},  # all batches, one repeat
        "lm_positions": {
            "real": real,
            "padded": {"rows_x_width": [[b["input_ids"].shape[0], k + b["input_ids"].shape[1]] for b in padded],
                       "computed": computed_padded, "real_fraction": real / computed_padded},
            "packed": {"rows_x_width": [list(b["input_ids"].shape) for b in packed],
                       "computed": computed_packed, "real_fraction": real / computed_packed},
        },
        "equal": {"loss_padded": loss_padded, "loss_packed": loss_packed, "loss_rel_diff": loss_rel,
                  "grad_rel_diff_max": grad_rel, "tolerance": tolerance},
    }
    entry["targets"] = [
        target("tokens_per_s_ratio", ">=", 1.8, speedup),
        target("loss_rel_diff", "<=", tolerance, loss_rel),
    ]
    return entry
