"""The ``train_compiled`` entry: one optimizer step with ``trainer.compile=true`` vs eager, time and equality.

Both sides are the training loop's own step (``frozen.train.step.train_step``) on two models built
with the same seed, compiled the way the loop compiles (``frozen.train.compiled.compile_model``). The
first compiled step (tracing + code generation) is timed on its own as ``compile_s``; the timed
repeats come after it, interleaved with eager ones. Equality: the first step of each side, from the
same weights on the same batch, gives the same loss, gradient norm and updated weights within
tolerance (compiled kernels are not bit-identical to eager ones). ``graphs`` and ``graph_breaks``: what
dynamo traced for the compiled side (its counters over the compiled steps); the training forward is one
graph, so the encoder, mapper and LM are optimised together. No target: the entry reports what compiling
gains on the machine it runs on.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch._dynamo.utils

from frozen.bench import lib as perf
from frozen.bench.common import median, run_config, side
from frozen.bench.train import train_setup
from frozen.train.compiled import check_compile, compile_model

LOSS_RTOL = 1e-3  # bf16 autocast on either side: compiled and eager round differently


def bench_train_compiled(args: argparse.Namespace, lm: str) -> dict[str, Any]:
    device = torch.device(args.device)
    check_compile(device)  # the loop's one-line refusal (no C++ compiler on CPU, no Triton on CUDA)
    eager, batch, _, eager_step, _, bf16 = train_setup(args, lm)
    compiled, _, _, compiled_step, _, _ = train_setup(args, lm)
    trainable = [n for n, p in eager.named_parameters() if p.requires_grad]
    before = {n: p.detach().clone() for n, p in eager.named_parameters() if n in trainable}
    assert all(torch.equal(before[n], p) for n, p in compiled.named_parameters() if n in trainable)
    compile_model(compiled)

    # One step each from the same weights: loss, gradient norm and the update must agree.
    results: dict[str, Any] = {}  # each side's StepResult
    first_eager = perf.timed(lambda: results.update(eager=eager_step()), device)
    counters = torch._dynamo.utils.counters
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    compile_s = perf.timed(lambda: results.update(compiled=compiled_step()), device)
    e, c = results["eager"], results["compiled"]
    after = dict(compiled.named_parameters())
    updates = {n: (p.detach() - before[n], after[n].detach() - before[n])
               for n, p in eager.named_parameters() if n in trainable}
    update_rel = max(float((cu - eu).norm() / eu.norm().clamp_min(1e-30)) for eu, cu in updates.values())
    loss_diff = abs(float(c.loss) - float(e.loss))
    equal = {
        "loss_eager": float(e.loss),
        "loss_compiled": float(c.loss),
        "loss_abs_diff": loss_diff,
        "grad_norm_eager": float(e.grad_norm),
        "grad_norm_compiled": float(c.grad_norm),
        "update_max_rel_diff": update_rel,  # max over parameters of |Δ_compiled - Δ_eager| / |Δ_eager|
        "within_tolerance": loss_diff <= LOSS_RTOL * abs(float(e.loss))
        and abs(float(c.grad_norm) - float(e.grad_norm)) <= 1e-2 * float(e.grad_norm),
    }

    times = perf.interleaved({"compiled": compiled_step, "eager": eager_step}, args.repeats, device)
    graphs, breaks = counters["stats"]["unique_graphs"] - graphs, sum(counters["graph_break"].values()) - breaks
    med = {name: median(values) for name, values in times.items()}
    return {
        "config": run_config(
            args, bf16, batch=args.train_batch, seq_len=compiled.num_prefix_tokens + batch["input_ids"].shape[1],
            compile="FrozenModel.compile(dynamic=True) (what trainer.compile=true does)",
        ),
        "project": side("trainer.compile=true: one optimizer step", times["compiled"]),
        "baseline": side("eager: one optimizer step", times["eager"]),
        "ratio": med["compiled"] / med["eager"],
        "speedup": med["eager"] / med["compiled"],
        "compile_s": compile_s,  # the first compiled step: tracing, code generation, C++/Triton builds
        "first_eager_step_s": first_eager,
        "graphs": graphs,  # graphs dynamo compiled for the training forward (1: no graph break)
        "graph_breaks": breaks,
        "equal": equal,
        "targets": [],  # none: the issue asks for the number on each machine, whatever it is
    }
