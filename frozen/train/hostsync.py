"""Counting where training makes the host wait for the device: reads of tensor values and collectives.

On a GPU the host queues kernels ahead of the device; reading a tensor's value (``.item()``,
``bool(t)``, ``int(t)``, ``float(t)``, ``.tolist()``) makes it stop until the device has caught up.
:class:`HostReads` wraps those methods and the ``torch.distributed`` collectives while it is entered
and counts each call, attributed to the first caller outside torch: ``frozen`` (this package) or
``other`` (transformers, ...). :func:`per_step` splits the counts at each step of
:func:`frozen.train.loop.train` (where the loop logs the step or advances the progress bar) and times
the steps. The tests assert the counts (tests/train/test_host_syncs.py); ``python -m
frozen.train.hostsync [hydra overrides]`` prints them and the step times of a short run
(``scripts/gpu_check.sh`` runs it on a GPU; docs/host_syncs.md).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import frozen
import frozen.train.loop as loop
from frozen.config import register_configs
from frozen.core.conf import conf_dir
from frozen.core.logging import RunLogger

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")  # Tensor methods that read values
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "broadcast", "reduce_scatter_tensor", "barrier")
_FROZEN = str(Path(frozen.__file__).parent)
_TORCH = str(Path(torch.__file__).parent)


def _caller() -> str:
    """``frozen`` or ``other``: who called into torch (frames inside torch itself are skipped)."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(_TORCH) or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    return "frozen" if frame is not None and frame.f_code.co_filename.startswith(_FROZEN) else "other"


class HostReads:
    """``with HostReads() as reads:`` counts ``reads.counts[("read" | "collective", "frozen" | "other")]``."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._saved: list[tuple[Any, str, Any]] = []
        self._inside = False  # a wrapped call made by another wrapped call is not counted twice

    def _wrap(self, owner: Any, name: str, kind: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self._inside:
                return original(*args, **kwargs)
            self.counts[(kind, _caller())] += 1
            self._inside = True
            try:
                return original(*args, **kwargs)
            finally:
                self._inside = False

        self._saved.append((owner, name, original))
        setattr(owner, name, counted)

    def __enter__(self) -> HostReads:
        for name in READS:
            self._wrap(torch.Tensor, name, "read")
        for name in COLLECTIVES:
            if hasattr(torch.distributed, name):
                self._wrap(torch.distributed, name, "collective")
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def total(self, kind: str = "read", who: str = "frozen") -> int:
        return self.counts[(kind, who)]


@contextlib.contextmanager
def per_step() -> Iterator[list[dict[str, Any]]]:
    """Count during :func:`~frozen.train.loop.train`; yields a list that fills with one row per step:
    ``step``, ``reads`` and ``other_reads`` (host reads from frozen / other code), ``collectives``, ``seconds``
    (host time since the previous step ended). A step ends at the loop's last ``RunLogger.step`` or
    ``RunLogger.advance`` call for it; what happens after it counts towards the next step."""
    rows: list[dict[str, Any]] = []
    originals = {name: getattr(RunLogger, name) for name in ("step", "advance")}
    with HostReads() as reads:
        last = {"counts": Counter(reads.counts), "time": time.perf_counter()}

        def mark(step: int) -> None:
            now, delta = time.perf_counter(), reads.counts - last["counts"]
            if not rows or step > rows[-1]["step"]:
                rows.append({"step": step, "reads": 0, "other_reads": 0, "collectives": 0, "seconds": 0.0})
            row = rows[-1]  # a later call for the same step (a log line, then the bar) adds to its row
            row["reads"] += delta[("read", "frozen")]
            row["other_reads"] += delta[("read", "other")]
            row["collectives"] += delta[("collective", "frozen")] + delta[("collective", "other")]
            row["seconds"] += now - last["time"]
            last.update(counts=Counter(reads.counts), time=now)

        def marking(name: str) -> Any:
            def call(logger: RunLogger, step: int, *args: Any) -> None:
                originals[name](logger, step, *args)
                mark(step)
            return call

        for name in originals:
            setattr(RunLogger, name, marking(name))
        try:
            yield rows
        finally:
            for name, original in originals.items():
                setattr(RunLogger, name, original)


def summarize(rows: list[dict[str, Any]], log_every: int) -> dict[str, Any]:
    """Reads per logging and non-logging step (the first step holds set-up and is left out) and step times.

    ``seconds_per_step``: host time from the end of the first logging step to the end of the last, over the
    steps between; every logging step waits for the device, so this is the device's pace too."""
    steady = rows[1:]
    logging = [r for r in steady if r["step"] % log_every == 0 or r is rows[-1]]
    quiet = [r for r in steady if r not in logging]
    ends = [i for i, r in enumerate(rows) if r in logging]
    span = sum(r["seconds"] for r in rows[ends[0] + 1:ends[-1] + 1]) if len(ends) > 1 else None
    return {
        "steps": len(rows),
        "reads_per_quiet_step": sorted(Counter(r["reads"] for r in quiet).items()),
        "reads_per_logging_step": sorted(Counter(r["reads"] for r in logging).items()),
        "other_reads_per_step": sorted(Counter(r["other_reads"] for r in steady).items()),
        "collectives_per_step": sorted(Counter(r["collectives"] for r in steady).items()),
        "seconds_per_step": span / (ends[-1] - ends[0]) if span is not None else None,
        "median_step_seconds": statistics.median(r["seconds"] for r in steady) if steady else None,
    }


def emulate_old_syncs(device: torch.device) -> contextlib.AbstractContextManager:
    """Make every step wait for the device twice, where the step used to read values (before the forward:
    the target count; after the update: the finite check), to time what the reads cost on this machine."""
    step = loop.train_step

    def waiting(*args: Any, **kwargs: Any) -> Any:
        torch.zeros((), device=device).item()  # waits for everything queued before it
        result = step(*args, **kwargs)
        bool(result.nonfinite)
        return result

    return _patched(loop, "train_step", waiting)


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m frozen.train.hostsync [--emulate-old-syncs] [--out FILE] overrides...``: train with the
    overrides (composed as ``train.py`` composes them, without its checks and Hydra run directory: give
    ``run_dir``), print the per-step counts and step times as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--emulate-old-syncs", action="store_true", help="wait for the device twice per step")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--cfg", choices=("job",), help="print the composed config and stop (as train.py --cfg job)")
    args, overrides = p.parse_known_args(argv)
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        composed = compose("train", overrides=overrides)
    if args.cfg:
        print(OmegaConf.to_yaml(composed))
        return {}
    cfg = OmegaConf.to_object(composed)
    device = torch.device("cuda" if cfg.trainer.device != "cpu" and torch.cuda.is_available() else "cpu")
    old = emulate_old_syncs(device) if args.emulate_old_syncs else contextlib.nullcontext()
    with old, per_step() as rows:
        loop.train(cfg)
    report = {"overrides": overrides, "emulate_old_syncs": args.emulate_old_syncs, "device": str(device),
              **summarize(rows, cfg.trainer.log_every), "per_step": rows}
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
