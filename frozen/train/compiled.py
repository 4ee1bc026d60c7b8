"""``trainer.compile=true``: the model's training forward (vision encoder, mapper, frozen LM and loss)
under ``torch.compile``, and the one-line refusal where the backend cannot run.

The whole :class:`~frozen.model.frozen_model.FrozenModel` is compiled in place (``nn.Module.compile``),
so ``state_dict`` keys, checkpoints and exports are unchanged (no ``_orig_mod.`` prefix) and DDP wraps
it as before. Only ``__call__`` (the caption loss of training and validation) is compiled: generation
(validation captions, evaluation) calls the LM directly and stays eager, so KV-cache decoding never
triggers recompiles. ``dynamic=True``: captions give every batch another width ``T`` (and the global
target count ``num_items_in_batch`` changes every step), so the graph is traced with symbolic sizes
once instead of being recompiled for each new width. Compiled kernels are not bit-identical to eager
ones; they agree within floating-point tolerance (tests/train/test_compile.py).
"""

from __future__ import annotations

import torch
from torch.utils._triton import has_triton  # inductor's own test: GPU kernels are generated as Triton code

from frozen.errors import FrozenConfigError


def compile_problem(device: torch.device) -> str | None:
    """Why ``torch.compile``'s default (inductor) backend cannot run on ``device``; None when it can."""
    if device.type == "cpu":
        # inductor writes C++ kernels on CPU and builds them with the compiler it finds (g++, or $CXX).
        from torch._inductor.cpp_builder import get_cpp_compiler  # heavy (~2 s): only with compile on

        try:
            get_cpp_compiler()
        except RuntimeError as err:
            reason = " ".join(str(err).split())
            return (f"trainer.compile=true on CPU needs a C++ compiler for torch.compile ({reason}); install g++ "
                    "(or set CXX to a working compiler) or set trainer.compile=false")
    elif device.type == "cuda":
        if not has_triton():
            return (f"trainer.compile=true on CUDA needs Triton, which this torch {torch.__version__} install lacks; "
                    "pip install the triton version torch pins, or set trainer.compile=false")
    return None


def check_compile(device: torch.device) -> None:
    """Raise the one-line refusal of :func:`compile_problem` (the loop calls it before loading anything)."""
    problem = compile_problem(device)
    if problem:
        raise FrozenConfigError(problem)


def compile_model(model: torch.nn.Module) -> None:
    """Compile ``model``'s forward in place, with symbolic sizes (see the module docstring)."""
    model.compile(dynamic=True)
