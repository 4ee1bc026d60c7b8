"""The generation entries: ``fewshot_shared_support`` (support encoded once) and ``batched_generation``."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from frozen.bench import lib as perf
from frozen.bench.common import STOPS, generation_config, load_generation_model, median, side, target
from frozen.model.generation import generate_shared


def bench_fewshot(args: argparse.Namespace, lm: str) -> dict[str, Any]:
    model = load_generation_model(args, lm)
    support_images, support_prompt, query_images, query_prompts = perf.fewshot_inputs(args.queries)
    full_images = [support_images + q for q in query_images]
    full_prompts = [support_prompt + q for q in query_prompts]

    def measure(
        batch: int, max_new_tokens: int = args.max_new_tokens
    ) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
        kw = {"max_new_tokens": max_new_tokens, "stop_strings": STOPS, "batch_size": batch}
        outputs: dict[str, list[str]] = {}

        def shared() -> None:
            outputs["shared"] = generate_shared(
                model, support_images, support_prompt, query_images, query_prompts, **kw
            )

        def full() -> None:
            outputs["full"] = model.generate(full_images, full_prompts, **kw)

        return perf.interleaved({"shared": shared, "full": full}, args.repeats, torch.device(args.device)), outputs

    times, outputs = measure(args.gen_batch)
    speedup = median(times["full"]) / median(times["shared"])
    entry = {
        "config": {
            **generation_config(args, model),
            "ways": 5,
            "shots": 1,
            "task_induction": True,
            "queries": len(query_prompts),
            "batch": args.gen_batch,
        },
        "project": side("generate_shared: support KV cache reused", times["shared"]),
        "baseline": side("model.generate on the full prompt per query", times["full"]),
        "ratio": 1 / speedup,
        "speedup": speedup,
        "identical": outputs["shared"] == outputs["full"],
        "sample_outputs": outputs["shared"][:5],
        "targets": [target("speedup", ">=", 2.0, speedup)],
    }
    # Diagnostic: the prompt pass alone (first token), where the support is or is not recomputed;
    # the decoding steps after it cost the same on both sides.
    times, outputs = measure(args.gen_batch, max_new_tokens=1)
    entry["first_token"] = {
        "shared_s": median(times["shared"]),
        "full_s": median(times["full"]),
        "speedup": median(times["full"]) / median(times["shared"]),
        "identical": outputs["shared"] == outputs["full"],
    }
    if len(query_prompts) > args.gen_batch:  # also: every query of the support set in one batch
        times, outputs = measure(len(query_prompts))
        entry["one_batch"] = {
            "batch": len(query_prompts),
            "shared_s": median(times["shared"]),
            "full_s": median(times["full"]),
            "speedup": median(times["full"]) / median(times["shared"]),
            "identical": outputs["shared"] == outputs["full"],
        }
    return entry


def bench_batched(args: argparse.Namespace, lm: str) -> dict[str, Any]:
    model = load_generation_model(args, lm)
    images, prompts = perf.vqa_inputs(args.prompts)
    kw = {"max_new_tokens": args.max_new_tokens, "stop_strings": STOPS}
    outputs: dict[str, list[str]] = {}

    def batched() -> None:
        outputs["batched"] = model.generate(images, prompts, **kw)

    def single() -> None:
        outputs["single"] = [model.generate([imgs], [p], **kw)[0] for imgs, p in zip(images, prompts)]

    times = perf.interleaved({"batched": batched, "single": single}, args.repeats, torch.device(args.device))
    speedup = median(times["single"]) / median(times["batched"])
    lengths = [len(model.tokenizer(p.replace("<image>", ""), add_special_tokens=False).input_ids) for p in prompts]
    return {
        "config": {
            **generation_config(args, model),
            "prompts": len(prompts),
            "prompt_text_tokens": [min(lengths), max(lengths)],
        },
        "project": side(f"one model.generate call, {len(prompts)} prompts left-padded", times["batched"]),
        "baseline": side(f"{len(prompts)} model.generate calls, one prompt each", times["single"]),
        "ratio": 1 / speedup,
        "speedup": speedup,
        "identical": outputs["batched"] == outputs["single"],
        "sample_outputs": outputs["batched"][:5],
        "targets": [target("speedup", ">=", 3.0, speedup)],
    }
