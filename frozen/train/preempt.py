"""Stopping cleanly on a preemption signal: finish the step, checkpoint, exit with status 75.

A cluster announces preemption or the end of a job's time with a signal (Slurm: SIGTERM, or the
signal asked for with ``--signal``; submitit: SIGUSR2 ``signal_delay_s`` before the limit). The
handler only sets a flag. The loop reads it after every optimizer step in one process, and every
``trainer.preempt_check_every`` steps under DDP/FSDP (:meth:`Preemption.reduced_flag`, a one-element
all-reduce read with the step records, so every rank stops after the same step), writes a
checkpoint at that step and raises :class:`Preempted`, which the entry point turns into exit status
:data:`PREEMPTED_EXIT` (75, ``EX_TEMPFAIL``: "try again"). A handler that was installed before ours
(submitit's requeue) runs after the checkpoint. Relaunching the same command resumes exactly.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any, Sequence

import torch

from frozen.core import dist
from frozen.errors import FrozenError

PREEMPTED_EXIT = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, run the same command again


class Preempted(FrozenError):
    """The run stopped on a preemption signal after writing a checkpoint; relaunch to resume."""

    exit_code = PREEMPTED_EXIT


class Preemption:
    """Signal handlers that set a flag, for the duration of a ``with`` block (main thread only)."""

    def __init__(self, names: Sequence[str], info: dist.DistInfo, device: torch.device) -> None:
        self.signals = [getattr(signal, name) for name in names]
        self.info, self.device = info, device
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # Python only lets it set handlers
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def requested(self) -> bool:
        """Whether any rank received a signal; the same answer on every rank (collective when distributed)."""
        if not self.signals:
            return False
        if not self.info.enabled:
            return self.received is not None
        return bool(self.reduced_flag().item() > 0)

    def reduced_flag(self) -> torch.Tensor:
        """``[1]`` on the device: the number of ranks that received a signal (a collective), not read yet; the
        loop reads it with its step records every ``trainer.preempt_check_every`` steps."""
        flag = torch.tensor([0.0 if self.received is None else 1.0], device=self.device)
        return dist.all_reduce_sum(flag)

    def stop(self, step: int, checkpoint: str) -> Preempted:
        """Give the signal to the handler installed before ours (submitit requeues), then the exception to raise."""
        received, previous = self.received, self._previous.get(self.received or -1)
        self.__exit__()
        name = signal.Signals(received).name if received else "a signal on another rank"
        stopped = Preempted(
            f"preempted by {name}: stopped after step {step} with checkpoint {checkpoint}; "
            f"relaunch the same command to resume from it (exit status {PREEMPTED_EXIT})"
        )
        if callable(previous):
            if self.info.is_main:  # submitit's handler requeues and exits: the log says where the run stopped first
                print(f"{stopped}; handing {name} to the handler installed before ours (submitit: requeue)",
                      file=sys.stderr, flush=True)
            previous(received, None)
        return stopped
