"""Precision and autocast, one rule for training, evaluation, the app and the bench.

``auto`` resolves per device (bf16 where the hardware has it natively); ``autocast_context`` turns a
resolved precision into the context every forward pass runs under.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the hardware has native bf16 (recent GPUs, AVX512-BF16/AMX CPUs), else
    fp16 on older GPUs and fp32 on other CPUs; any other value is returned as given."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager:
    """``torch.autocast`` for bf16/fp16, a no-op context for fp32 (reusable across steps)."""
    dtype = AMP_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
