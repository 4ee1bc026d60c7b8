"""The evaluation harness: batched generation, gathering across ranks, and the collected outputs.

The task kinds themselves are plain functions in :mod:`frozen.eval.runners`; they build queries
(:mod:`frozen.eval.tasks`), call :meth:`Harness.generate` and :meth:`Harness.gather`, score, and
hand rows and predictions back through :meth:`Harness.add_row` / :meth:`Harness.keep`.

Each rank generates answers for its share of the items (split by index, no duplicates, no drops);
the per-example records are gathered on every rank in an id order and scored identically.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable

from frozen.config import DataConfig, EvalTaskBase, EvaluateConfig
from frozen.core import dist
from frozen.core.precision import autocast_context
from frozen.eval import tasks as T
from frozen.eval.metrics import mean_std
from frozen.model.frozen_model import FrozenModel


def postprocess(text: str, max_words: int | None) -> str:
    """What reaches the metric: the generated text (already cut at the first stop string, ``"\\n"``,
    and stripped by ``generate``), optionally cut to its first ``max_words`` words."""
    return " ".join(text.split()[:max_words]) if max_words else text.strip()


class Harness:
    """Generation and gathering for one model; collects rows, predictions, submissions and notes."""

    def __init__(self, model: FrozenModel, cfg: EvaluateConfig, info: dist.DistInfo,
                 log: Callable[[str], None] = print):
        self.model, self.cfg, self.info, self.log = model, cfg, info, log
        self.data = DataConfig(train_shards="", data_root=cfg.data_root, num_workers=0)
        self.image_size = model.model_cfg.image_size
        self.autocast = autocast_context(cfg.precision, info.device)  # the training step's own rule
        self.rows: list[dict[str, Any]] = []
        self.predictions: list[dict[str, Any]] = []
        self.submissions: dict[str, list[dict[str, Any]]] = {}  # file name -> official server format
        self.notes: list[str] = []  # printed under the results table (e.g. why a task has no rows)

    # ------------------------------------------------------------------ generation
    def generate(self, queries: Iterable[T.Query], task: EvalTaskBase) -> list[dict[str, Any]]:
        """Batched greedy generation for this rank's queries, cut at a newline; one record per query.

        Consecutive queries of one group (several questions about one support set) go through
        ``generate_shared``: the support is encoded and run through the LM once, its KV cache
        reused for every batch of queries. Greedy answers are the same either way (tested).
        """
        records: list[dict[str, Any]] = []
        batch: list[T.Query] = []
        stops = ["\n"]

        def record(q: T.Query, text: str) -> None:
            records.append({"id": q.id, "prompt": q.prompt, "prediction": postprocess(text, task.max_answer_words),
                            "raw": text, "target": q.target, **q.meta})

        def flush() -> None:
            with self.autocast:
                texts = self.model.generate([q.images for q in batch], [q.prompt for q in batch],
                                            max_new_tokens=task.max_new_tokens, stop_strings=stops,
                                            min_new_tokens=task.min_new_tokens)
            for q, text in zip(batch, texts):
                record(q, text)
            batch.clear()

        def shared(group: list[T.Query]) -> None:
            support = group[0].parts[0]
            with self.autocast:
                texts = self.model.generate_shared(
                    None, support, None, [q.parts[1] for q in group],
                    max_new_tokens=task.max_new_tokens, stop_strings=stops, batch_size=self.cfg.batch_size,
                    min_new_tokens=task.min_new_tokens)
            for q, text in zip(group, texts):
                record(q, text)

        for key, run in itertools.groupby(queries, key=lambda q: q.group):
            run = list(run)
            if key is not None and len(run) > 1 and all(q.parts for q in run):
                shared(run)
                continue
            for query in run:
                batch.append(query)
                if len(batch) == self.cfg.batch_size:
                    flush()
        if batch:
            flush()
        return records

    def gather(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """All ranks' records on every rank, in a rank-independent order (by id)."""
        merged = [r for part in dist.all_gather_objects(records) for r in part]
        return sorted(merged, key=lambda r: str(r["id"]))

    def answer(self, queries: Iterable[T.Query], task: EvalTaskBase, condition: str) -> list[dict[str, Any]]:
        """Generate (with black images under ``black_images``) and gather: every rank's records."""
        if condition == "black_images":
            queries = T.black_out(queries, self.image_size)
        return self.gather(self.generate(queries, task))

    # ------------------------------------------------------------------ outputs
    def add_row(self, task: str, metric: str, condition: str, values: list[float], n: int,
                settings: dict[str, Any], **extra: Any) -> None:
        """One results row: mean and sample std over ``values`` (one per trial)."""
        mean, std = mean_std(values)
        row = {"task": task, "metric": metric, **settings, "condition": condition, "mean": mean, "stddev": std,
               "num_examples": n, "num_trials": len(values), **extra}
        self.rows.append(row)

    def keep(self, task: str, settings: dict[str, Any], condition: str, trial: int,
             records: list[dict[str, Any]]) -> None:
        """Keep scored records for predictions.jsonl (rank 0), tagged with their setting."""
        if self.info.is_main:
            tag = {"task": task, **settings, "condition": condition, "trial": trial}
            self.predictions += [{**tag, **r} for r in records]

    def limit(self, task: EvalTaskBase) -> int | None:
        return self.cfg.max_examples if self.cfg.max_examples is not None else task.max_examples
