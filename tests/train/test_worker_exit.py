"""How a rank's process ends: with the status its work decided, whatever interpreter finalization does.

After a rank's work is done, c10d's gloo threads can still abort the process during Python's
finalization (SIGABRT, "terminate called without an active exception"), and the launcher then reports a
crashed run whose results were written. An ``atexit`` hook that aborts stands in for that here.
"""

from __future__ import annotations

import atexit
import os

import pytest
import torch

from frozen.core import dist


class Preempted(Exception):
    exit_code = 75


def _rank_aborting_at_finalization(preempt: bool) -> None:
    info = dist.init("cpu")
    total = dist.all_reduce_sum(torch.ones(4))
    assert info.enabled and total.tolist() == [2.0] * 4
    atexit.register(os.abort)  # what a late gloo thread does to a finalizing interpreter
    dist.cleanup()
    if preempt:
        raise Preempted("stopped at a checkpoint")


def test_a_rank_whose_finalization_would_abort_ends_with_status_0():
    dist.spawn(_rank_aborting_at_finalization, (False,), num_local=2)  # raised ProcessExitedException (SIGABRT)


def test_a_preempted_rank_whose_finalization_would_abort_ends_with_75():
    with pytest.raises(SystemExit) as stop:
        dist.spawn(_rank_aborting_at_finalization, (True,), num_local=2)
    assert stop.value.code == 75


def test_a_rank_launched_by_torchrun_ends_without_finalization_with_its_status(monkeypatch):
    from frozen import cli

    ended: list[int] = []

    def record(code: int) -> None:
        ended.append(code)

    monkeypatch.setattr(dist, "exit_process", record)
    monkeypatch.setattr(dist, "_joined", True)
    assert cli.run(lambda: 1.5) == 1.5 and ended == [0]

    def preempted() -> None:
        raise SystemExit(75)

    with pytest.raises(SystemExit):  # exit_process is recorded here instead of ending the test process
        cli.run(preempted)
    assert ended == [0, 75]
    monkeypatch.setattr(dist, "_joined", False)
    assert cli.run(lambda: 2.5) == 2.5 and ended == [0, 75], "a single-process run ends as Python does"
    with pytest.raises(SystemExit):
        cli.run(preempted)
    assert ended == [0, 75]
