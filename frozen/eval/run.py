"""``evaluate(cfg)``: load a trained model, run each task of a preset with the function of its kind
(:data:`RUNNERS`), write results.json and predictions, print the results table."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from rich.markup import escape

from frozen.config import EvalTaskConfig, EvaluateConfig, VqaTaskConfig, validate_evaluate_config
from frozen.core import dist
from frozen.core.logging import RunLogger, console
from frozen.core.results import rows_table, skipped_cell
from frozen.errors import FrozenConfigError
from frozen.eval.caption import run_caption
from frozen.eval.context import EvalContext
from frozen.eval.episodes import task_induction_text
from frozen.eval.fewshot import run_episodes
from frozen.eval.plots import write_fewshot
from frozen.eval.position import POSITION_LINE, TEXT_FIRST
from frozen.eval.protocol import protocols
from frozen.eval.store import write_results
from frozen.eval.vqa import run_vqa
from frozen.model.export import CONFIG_NAME, resolve_export
from frozen.model.frozen_model import FrozenModel

RUNNERS: dict[str, Callable[[str, Any, EvalContext], None]] = {
    "vqa": run_vqa, "caption": run_caption, "binding": run_episodes, "deepmind": run_episodes}
"""Task kind (``task.kind``) -> the function that loads, queries, generates and scores it."""


def trained_blind(export: Path) -> bool:
    """Whether the export records ``trained_blind: true`` (written by training with ``trainer.blind``)."""
    return bool(json.loads((Path(export) / CONFIG_NAME).read_text()).get("trained_blind", False))


def for_blind_model(tasks: dict[str, EvalTaskConfig]) -> dict[str, EvalTaskConfig]:
    """The tasks with each ``image`` condition run as ``black_images`` (kept once, in place); ``text_first``
    left out: the position check compares real images at two positions, and this model reads none."""
    out = {}
    for name, task in tasks.items():
        conditions = list(dict.fromkeys("black_images" if c == "image" else c for c in task.conditions
                                        if c != TEXT_FIRST))
        out[name] = dataclasses.replace(task, conditions=conditions)
    return out


def templates(task: EvalTaskConfig) -> dict[str, Any]:
    """The prompt strings a task used, reported in results.json beside the scores."""
    if isinstance(task, VqaTaskConfig):
        lead = {"text_first_line": POSITION_LINE} if TEXT_FIRST in task.conditions else {}
        return {"query": task.prompt, "demo_answer": task.demo_answer, "separator": task.separator} | lead
    if task.kind == "caption":
        return {"caption_prompt": task.caption_prompt}
    return {"query": task.question_template, "naming_question": task.naming_question,
            "answer_prefix": task.answer_prefix, "task_induction": task_induction_text(["{name1}", "{name2}"]),
            "support_caption": "from the data set (binding: \"This is a {name}.\")", "line_separator": "\n"}


def run_task(name: str, task: EvalTaskConfig, ctx: EvalContext) -> None:
    """Run one task of a preset with the function of its kind."""
    if getattr(task, "kind", None) not in RUNNERS:
        raise TypeError(f"task {name}: {type(task).__name__} is not an evaluation task schema")
    RUNNERS[task.kind](name, task, ctx)


def evaluate(cfg: EvaluateConfig, checked: bool = False) -> list[dict[str, Any]]:
    """Run the preset on this rank's share; rank 0 writes ``results.json`` and returns the rows.

    ``checked=True``: the caller already ran :func:`frozen.preflight.check_evaluate` on this config,
    which holds the value check; otherwise it runs here, before anything is loaded.
    """
    if not checked:
        validate_evaluate_config(cfg)
    info = dist.init(cfg.device)
    run_dir = Path(cfg.run_dir or "outputs/eval")
    export = resolve_export(cfg.load_path)
    tasks = {name: t for name, t in cfg.eval.tasks.items() if not cfg.tasks or name in cfg.tasks}
    if not tasks:
        raise FrozenConfigError(
            f"no tasks to run: preset {cfg.eval.name!r} has {sorted(cfg.eval.tasks)}, tasks={cfg.tasks}")
    blind = trained_blind(export)
    if blind and cfg.blind_model_sees_black_images:
        tasks = for_blind_model(tasks)
    logger = RunLogger(run_dir, active=info.is_main, backend=cfg.logger.backend, project=cfg.logger.project,
                       entity=cfg.logger.entity, name=cfg.logger.name or f"eval-{cfg.eval.name}", tags=cfg.logger.tags,
                       mode=cfg.logger.mode, config=dataclasses.asdict(cfg), total_steps=0)
    try:
        if blind and info.is_main:
            logger.print("the model was trained blind (trainer.blind=true): its image condition runs as black_images"
                         if cfg.blind_model_sees_black_images else
                         "the model was trained blind, but blind_model_sees_black_images=false: it sees real images")
        torch.manual_seed(cfg.seed)
        model = FrozenModel.from_pretrained(export).to(info.device).eval()
        ctx = EvalContext(model, cfg, info, log=logger.print if info.is_main else (lambda *_: None))
        timings: dict[str, float] = {}
        for name, task in tasks.items():
            start = time.perf_counter()
            run_task(name, task, ctx)
            timings[name] = round(time.perf_counter() - start, 2)
            if info.is_main:
                logger.print(f"{name}: {timings[name]:.0f} s")
        store = ctx.store
        if info.is_main:
            extra = {"timings_s": timings, "trained_blind": blind, "notes": store.notes,
                     "templates": {name: templates(task) for name, task in tasks.items()},
                     "conditions_run": {name: task.conditions for name, task in tasks.items()}}
            config = dataclasses.asdict(cfg)  # protocol: what make compare checks before comparing two runs
            extra |= {"protocol": protocols(config), "lm_num_parameters": sum(p.numel() for p in model.lm.parameters())}
            out = write_results(run_dir, store.rows, store.predictions, config=config,
                                checkpoint=export, extra=extra, submissions=store.submissions)
            console.print(rows_table(store.rows, title=f"{cfg.eval.name}: {export}"))
            for note in store.notes:
                console.print(f"note: {escape(note)}")
            figure = write_fewshot(store.rows, run_dir, title=f"{cfg.eval.name}: {'/'.join(Path(export).parts[-2:])}")
            logger.print(f"wrote {out}, {run_dir / 'predictions.jsonl'}" + (f" and {figure}" if figure else ""))
            if store.rows:
                columns = list(dict.fromkeys(k for r in store.rows for k in r))  # kinds have different settings
                logger.table("eval/results", 0, columns,  # skipped as text: W&B wants one type a column
                             [[skipped_cell(r) if c == "skipped" else r.get(c) for c in columns] for r in store.rows])
            if figure:
                logger.image("eval/fewshot", 0, figure)
        return store.rows
    finally:
        logger.finish()
        dist.cleanup()
