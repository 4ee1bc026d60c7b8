"""``evaluate(cfg)``: load a trained model, run a preset's tasks, write results.json and predictions."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from frozen.train import dist
from frozen.config import EvaluateConfig
from frozen.errors import FrozenConfigError
from frozen.eval.harness import Harness
from frozen.eval.report import print_table, write_results
from frozen.train.logging import RunLogger, console
from frozen.model.frozen_model import FrozenModel, resolve_export


def evaluate(cfg: EvaluateConfig) -> list[dict[str, Any]]:
    """Run the preset on this rank's share; rank 0 writes ``results.json`` and returns the rows."""
    info = dist.init(cfg.device)
    run_dir = Path(cfg.run_dir or "outputs/eval")
    export = resolve_export(cfg.load_path)
    tasks = {name: t for name, t in cfg.eval.tasks.items() if not cfg.tasks or name in cfg.tasks}
    if not tasks:
        raise FrozenConfigError(f"no tasks to run: preset {cfg.eval.name!r} has {sorted(cfg.eval.tasks)}, tasks={cfg.tasks}")
    logger = RunLogger(run_dir, active=info.is_main, backend=cfg.logger.backend, project=cfg.logger.project,
                       entity=cfg.logger.entity, name=cfg.logger.name or f"eval-{cfg.eval.name}", tags=cfg.logger.tags,
                       mode=cfg.logger.mode, config=dataclasses.asdict(cfg), total_steps=0)
    try:
        torch.manual_seed(cfg.seed)
        model = FrozenModel.from_pretrained(export).to(info.device).eval()
        harness = Harness(model, cfg, info, log=logger.print if info.is_main else (lambda *_: None))
        timings: dict[str, float] = {}
        for name, task in tasks.items():
            start = time.perf_counter()
            harness.run(name, task)
            timings[name] = round(time.perf_counter() - start, 2)
            if info.is_main:
                logger.print(f"{name}: {timings[name]:.0f} s")
        if info.is_main:
            out = write_results(run_dir, harness.rows, harness.predictions, config=dataclasses.asdict(cfg), checkpoint=export,
                                extra={"timings_s": timings})
            print_table(harness.rows, title=f"{cfg.eval.name}: {export}", console=console)
            logger.print(f"wrote {out} and {run_dir / 'predictions.jsonl'}")
            logger.table("eval/results", 0, list(harness.rows[0]), [list(r.values()) for r in harness.rows])
        return harness.rows
    finally:
        logger.finish()
        dist.cleanup()
