"""The training log's throughput over one log interval: images/s, real text tokens/s, padding, MFU.

Counts of every micro-batch this process trained on (``add``) are summed over ranks when the loop
logs (one all-reduce per log line, on every rank at the same steps), then divided by the wall-clock
time since the previous log line (or since the loop started). Nothing in the interval is left out:
data waits, compilation, validation and checkpoint writes all count, so the numbers are what the run
actually delivered.

- ``img/s``: images of all ranks per second.
- ``tok/s``: real text tokens (prompt + caption + EOS, the collator's ``num_text_tokens``) per second;
  padding and the visual prefix are not counted.
- ``padding``: ``1 - real / computed`` LM positions (:func:`frozen.data.collate.lm_positions`: prefix +
  text positions that hold data, over all positions the LM ran).
- ``mfu``: model FLOPs (:func:`frozen.train.flops.analytic_step_flops` over the interval's computed
  LM positions and images, padding included because the LM computes it) per second over
  ``world_size x peak``; only when the peak is known (a GPU in the table, or ``trainer.peak_tflops``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from frozen.core import dist
from frozen.data.collate import lm_positions
from frozen.train.flops import analytic_step_flops


@dataclass(frozen=True)
class StepFlops:
    """What :func:`analytic_step_flops` needs besides the counts: parameter counts and vision FLOPs."""

    n_lm: int  # LM matmul parameters (frozen.train.flops.lm_matmul_params)
    n_mapper: int
    vision_flops_per_image: int  # counted forward FLOPs of the encoder on one image
    lm_weight_grads: bool  # the LM is trained (its weight gradients are computed too)


class Throughput:
    """``add(micro_batches)`` every step; ``metrics()`` at each log line returns the interval's rates
    and starts the next interval."""

    def __init__(
        self,
        num_prefix_tokens: int,
        *,
        device: torch.device,
        world_size: int = 1,
        step_flops: StepFlops | None = None,
        peak_tflops: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.k = num_prefix_tokens
        self.device = device
        self.world_size = world_size
        self.step_flops = step_flops if peak_tflops else None
        self.peak_tflops = peak_tflops
        self.clock = clock
        self.start()

    def start(self) -> None:
        """Begin an interval now (the loop calls it once before the first step)."""
        self._since = self.clock()
        self._counts = [0, 0, 0, 0]  # images, text tokens, real LM positions, computed LM positions

    def add(self, micro_batches: Sequence[dict[str, Any]]) -> None:
        for batch in micro_batches:
            real, computed = lm_positions(batch, self.k)
            for i, n in enumerate((len(batch["images"]), batch["num_text_tokens"], real, computed)):
                self._counts[i] += int(n)

    def pending_totals(self) -> torch.Tensor | None:
        """The interval's counts summed over ranks (``[4]`` float64 on the device, not read yet), for a caller
        that reads them together with its other values; None in one process, whose counts are host ints."""
        if self.world_size == 1:
            return None
        return dist.all_reduce_sum(torch.tensor(self._counts, dtype=torch.float64, device=self.device))

    def metrics(self, totals: Sequence[float] | None = None) -> dict[str, float]:
        """The interval's ``img/s``, ``tok/s``, ``padding`` (and ``mfu``), all ranks together. ``totals``: the
        values of :meth:`pending_totals` when the caller read them already."""
        if totals is None:
            pending = self.pending_totals()
            totals = self._counts if pending is None else pending.tolist()
        images, tokens, real, computed = (float(v) for v in totals)
        elapsed = max(self.clock() - self._since, 1e-9)
        out = {
            "img/s": images / elapsed,
            "tok/s": tokens / elapsed,
            "padding": 1.0 - real / computed if computed else 0.0,
        }
        if self.step_flops is not None:
            f = self.step_flops
            model_flops = analytic_step_flops(
                f.n_lm, int(computed), f.vision_flops_per_image * int(images), f.n_mapper, int(images),
                f.lm_weight_grads,
            )
            out["mfu"] = model_flops / elapsed / (self.world_size * self.peak_tflops * 1e12)
        self.start()
        return out
