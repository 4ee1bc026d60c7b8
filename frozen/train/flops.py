"""Model FLOPs of a train step and accelerator peaks: what the training log's MFU, ``make bench`` and the
scaling plan (``frozen/scaling.py``) compute it from. The one owner of these formulas; ``frozen.bench``
imports them from here."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

# bf16 dense tensor-core peaks (TFLOP/s, no sparsity) by a substring of torch.cuda.get_device_name().
# Checked in order, so "H100" is tried before "H10" and "A100" before "A10".
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("A6000", 155.0),
    ("RTX 4090", 165.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


def lm_matmul_params(lm: torch.nn.Module) -> int:
    """LM parameters that take part in matmuls: all but an input embedding that is a mere lookup.

    A tied embedding is counted once (it is the LM head's weight). Works on an LM built on the meta
    device too (FSDP): tying is read off the parameter objects there, not their storage.
    """
    total = sum(p.numel() for p in lm.parameters())  # parameters() yields a tied weight once
    inp, out = lm.get_input_embeddings().weight, lm.get_output_embeddings()
    tied = out is not None and (
        out.weight is inp or (not inp.is_meta and out.weight.data_ptr() == inp.data_ptr())
    )
    return total if tied else total - inp.numel()


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of matmuls, convolutions and attention executed by ``fn()`` (``torch.utils.flop_counter``)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def vision_flops_per_image(vision: torch.nn.Module, image_size: int, device: torch.device) -> int:
    """Counted forward FLOPs of ``vision`` on one ``[1, 3, S, S]`` image, in eval mode and without
    gradients, so no batch-norm statistic or RNG state of the training run moves."""
    was_training = vision.training
    vision.eval()
    try:
        with torch.no_grad():
            return count_flops(lambda: vision(torch.zeros(1, 3, image_size, image_size, device=device)))
    finally:
        vision.train(was_training)


def analytic_step_flops(
    n_lm: int, lm_tokens: int, vision_forward_flops: int, n_mapper: int, batch_size: int, lm_weight_grads: bool
) -> float:
    """Model FLOPs of one train step.

    LM: forward ``2·N·tokens`` plus backward ``2·N·tokens`` for activation gradients, plus another
    ``2·N·tokens`` for weight gradients only when they are computed (the plain variant); attention
    score FLOPs are left out (short sequences). Vision: 3x its counted forward (forward + input and
    weight gradients). Mapper: ``6·N·B`` (one input vector per image). Linear in tokens and images, so
    the FLOPs of several steps are this formula over their summed counts.
    """
    lm_factor = 6 if lm_weight_grads else 4
    return lm_factor * n_lm * lm_tokens + 3 * vision_forward_flops + 6 * n_mapper * batch_size


def peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """Dense bf16 peak of ``device`` in TFLOP/s from :data:`PEAK_BF16_TFLOPS` (None: unknown, or a CPU)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf for key, tf in PEAK_BF16_TFLOPS if key in name), None)
