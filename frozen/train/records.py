"""Per-step values that stay on the device until the loop needs them: one host read per logging step.

Every optimizer step leaves its loss, gradient norm and non-finite flag on the device (scalar tensors
of :class:`~frozen.train.step.StepResult`). Reading any of them makes the host wait until the device
has finished the step, so :class:`PendingSteps` keeps them, with what the host knows of the step (its
number, learning rate, samples skipped so far), until the loop must know them: a logging step, a
checkpoint step, a preemption check of a distributed run, the last step. :meth:`PendingSteps.read`
then copies all of them to the host in one transfer, together with any other device values the loop
needs at that point (the throughput counts and the preemption flag summed over ranks).
:class:`NonFiniteCount` replays the records in step order to count skipped steps and find a run of
``max_nonfinite`` of them in a row (docs/host_syncs.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class StepRecord:
    step: int  # optimizer steps done, this one included (the step number the log shows)
    lr: float
    skipped_samples: int  # samples the loader skipped so far (the log's skipped_samples at this step)
    loss: float  # the global mean caption-token loss of the step
    grad_norm: float
    nonfinite: bool  # the optimizer did not step


class PendingSteps:
    """The steps since the last read: host facts in a list, device scalars kept as they are (no copy, no read)."""

    def __init__(self) -> None:
        self._host: list[tuple[int, float, int]] = []
        self._device: list[torch.Tensor] = []  # 3 scalars per step: loss, grad_norm, nonfinite

    def __len__(self) -> int:
        return len(self._host)

    def add(self, step: int, lr: float, skipped_samples: int, result: Any) -> None:
        """Keep a step's :class:`~frozen.train.step.StepResult` (``loss``, ``grad_norm``, ``nonfinite``)."""
        self._host.append((step, lr, skipped_samples))
        self._device += [result.loss.detach(), result.grad_norm.detach(), result.nonfinite]

    def read(self, *extra: torch.Tensor | None) -> tuple[list[StepRecord], list[list[float] | None]]:
        """``(records in step order, the values of each of extra)`` from one host read; empties the window.

        ``extra``: other device tensors to read in the same transfer (a None stays None)."""
        parts = [torch.stack([v.double() for v in self._device])] if self._device else []
        present = [e for e in extra if e is not None]
        parts += [e.detach().double().reshape(-1) for e in present]
        values = torch.cat(parts).tolist() if parts else []  # the one host read: [3 * steps + sum(extra sizes)]
        records = [
            StepRecord(step, lr, skipped, values[3 * i], values[3 * i + 1], bool(values[3 * i + 2]))
            for i, (step, lr, skipped) in enumerate(self._host)
        ]
        at, extras = 3 * len(self._host), []
        for e in extra:
            if e is None:
                extras.append(None)
                continue
            extras.append(values[at:at + e.numel()])
            at += e.numel()
        self._host, self._device = [], []
        return records, extras


@dataclass
class NonFiniteCount:
    """Skipped steps, replayed from records in step order: ``total`` over the run, ``in_a_row`` now, and
    ``stop``: ``(run length, last step)`` of the latest run of at least ``limit`` skipped steps in a row
    (None: the run goes on). Checkpoints hold ``total`` (the run's ``nonfinite_steps``), as before."""

    limit: int
    total: int = 0
    in_a_row: int = 0
    stop: tuple[int, int] | None = None

    def update(self, record: StepRecord) -> None:
        if not record.nonfinite:
            self.in_a_row = 0
            return
        self.total += 1
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            self.stop = (self.in_a_row, record.step)
