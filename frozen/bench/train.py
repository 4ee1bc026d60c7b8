"""The ``train_step`` entry: the frozen-LM train step vs the LM left trainable, time, peak memory, FLOPs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any, Callable

import torch

from frozen.bench import lib as perf
from frozen.bench.common import load_model, median, run_config, side, target
from frozen.core.precision import autocast_context, resolve_precision
from frozen.train import flops
from frozen.train.step import adamw, train_step  # the loop's own optimizer and step

TRAIN_VARIANTS = ("frozen", "plain", "frozen_ckpt")


def train_setup(
    args: argparse.Namespace, lm: str
) -> tuple[Any, dict[str, Any], Callable[[str], None], Callable[[], None], Any, bool]:
    """Model, synthetic batch, ``configure(variant)``, ``step()`` (returns the StepResult), autocast context,
    bf16 flag."""
    device = torch.device(args.device)
    bf16 = resolve_precision("auto", device) == "bf16"  # native bf16 hardware; else fp32 throughout
    model = load_model(args, lm, lm_dtype="bfloat16" if bf16 else "float32")
    model.train()
    batch = perf.synthetic_caption_batch(model.tokenizer, args.train_batch, args.image_size)
    params = model.trainable_parameters()  # vision + mapper: the optimizer never sees LM weights
    optimizer = adamw(params, lr=1e-4, betas=(0.9, 0.95))
    autocast = autocast_context("bf16" if bf16 else "fp32", device)

    def configure(variant: str) -> None:
        model.enable_activation_checkpointing(variant == "frozen_ckpt")
        perf.set_lm_weight_grads(model, variant == "plain")

    def step() -> Any:  # the StepResult (loss, grad norm)
        return train_step(model, optimizer, params, [batch], device=device, autocast=autocast, grad_clip=1.0)

    return model, batch, configure, step, autocast, bf16


def memory_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Subprocess side: extra peak memory of two train steps of one variant over the loaded model."""
    model, batch, configure, step, autocast, _ = train_setup(args, args.lm)
    configure(args.memory_probe)
    device = torch.device(args.device)
    # Weights loaded from safetensors may be memory-mapped and paged in on first use: touch them all
    # with an inference forward first, so the baseline below already holds the model.
    with torch.no_grad(), autocast:
        model(batch["images"].to(device), batch["input_ids"].to(device), batch["attention_mask"].to(device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step(), step()
        return {
            "peak_extra_bytes": torch.cuda.max_memory_allocated(device) - base,
            "method": "cuda.max_memory_allocated",
        }
    base = perf.current_rss_bytes()
    resettable = perf.reset_peak_rss()
    step(), step()
    return {
        "peak_extra_bytes": perf.peak_rss_bytes() - base,
        "method": "VmHWM after clear_refs" if resettable else "ru_maxrss (not resettable)",
    }


def _run_memory_probe(args: argparse.Namespace, lm: str, variant: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "frozen.bench.cli",
        "--memory-probe",
        variant,
        "--lm",
        lm,
        "--device",
        args.device,
        "--backbone",
        args.backbone,
        "--image-size",
        str(args.image_size),
        "--train-batch",
        str(args.train_batch),
        "--threads",
        str(args.threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {variant} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_train_step(args: argparse.Namespace, lm: str) -> dict[str, Any]:
    device = torch.device(args.device)
    model, batch, configure, step, autocast, bf16 = train_setup(args, lm)
    inputs = (batch["images"].to(device), batch["input_ids"].to(device), batch["attention_mask"].to(device))

    def forward() -> None:  # the forward of a train step (graph built, then dropped)
        with autocast:
            model(*inputs, labels=batch["labels"].to(device)).loss.detach()

    fns: dict[str, perf.Timed] = {v: (lambda v=v: configure(v), step) for v in TRAIN_VARIANTS}
    fns.update({f"{v}_forward": (lambda v=v: configure(v), forward) for v in ("frozen", "plain")})
    times = perf.interleaved(fns, args.repeats, device)
    med = {name: median(values) for name, values in times.items()}

    # FLOPs: counted by torch's FlopCounterMode (one step each) and by the documented formula.
    configure("frozen")
    counted = {"forward": flops.count_flops(forward), "frozen_step": flops.count_flops(step)}
    configure("plain")
    counted["plain_step"] = flops.count_flops(step)
    configure("frozen")
    with torch.no_grad():
        vision_flops = flops.count_flops(lambda: model.vision(inputs[0]))
    seq = model.num_prefix_tokens + batch["input_ids"].shape[1]
    tokens = args.train_batch * seq
    n_lm, n_mapper = flops.lm_matmul_params(model.lm), sum(p.numel() for p in model.mapper.parameters())
    analytic = {
        v: flops.analytic_step_flops(n_lm, tokens, vision_flops, n_mapper, args.train_batch, v == "plain")
        for v in ("frozen", "plain")
    }

    entry: dict[str, Any] = {
        "config": run_config(
            args, bf16, k=model.num_prefix_tokens, batch=args.train_batch, seq_len=seq,
            caption_tokens=int(batch["attention_mask"].sum(1).float().mean()), native_bf16=bf16,
        ),
        "project": side("frozen LM (requires_grad=False): one optimizer step", times["frozen"]),
        "baseline": side("LM weights requires_grad=True, not in the optimizer", times["plain"]),
        "ratio": med["frozen"] / med["plain"],
        "speedup": med["plain"] / med["frozen"],
        "activation_checkpointing": {
            **side("frozen LM + activation checkpointing", times["frozen_ckpt"]),
            "ratio_to_frozen": med["frozen_ckpt"] / med["frozen"],
        },
        "forward_s": {"frozen": med["frozen_forward"], "plain": med["plain_forward"]},
        "step_over_forward": {
            "frozen": med["frozen"] / med["frozen_forward"],
            "plain": med["plain"] / med["plain_forward"],
        },
        "flops": {
            "counted": counted,
            "counted_step_over_forward": {v: counted[f"{v}_step"] / counted["forward"] for v in ("frozen", "plain")},
            "analytic": analytic,
            "lm_matmul_params": n_lm,
            "vision_forward_flops": vision_flops,
        },
        "tokens_per_s": tokens / med["frozen"],
    }
    peak = flops.peak_tflops(device, args.peak_tflops)
    if peak:
        entry["mfu"] = {
            "frozen": analytic["frozen"] / med["frozen"] / (peak * 1e12),
            "plain": analytic["plain"] / med["plain"] / (peak * 1e12),
            "peak_tflops": peak,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "override",
        }
    entry["targets"] = [target("time_ratio", "<=", 0.75, entry["ratio"])]
    if not args.no_memory:
        mem = {v: _run_memory_probe(args, lm, v) for v in TRAIN_VARIANTS}
        grad_bytes = sum(p.numel() * p.element_size() for p in model.lm.parameters())
        entry["memory"] = {
            **{f"{v}_peak_extra_mb": mem[v]["peak_extra_bytes"] / 2**20 for v in mem},
            "ratio": mem["frozen"]["peak_extra_bytes"] / mem["plain"]["peak_extra_bytes"],
            "ckpt_ratio_to_frozen": mem["frozen_ckpt"]["peak_extra_bytes"] / mem["frozen"]["peak_extra_bytes"],
            "lm_weight_grad_mb": grad_bytes / 2**20,
            "method": mem["frozen"]["method"],
        }
        entry["targets"].append(target("peak_memory_ratio", "<", 1.0, entry["memory"]["ratio"]))
    return entry
