"""The few-shot harness: run every task of a preset under its shots x conditions x trials grid.

Each rank generates answers for its share of the items (split by index, no duplicates, no drops),
the per-example records are gathered on rank 0, and rank 0 scores them. Every setting yields rows
``{"task", "metric", "shots", "condition", "mean", "stddev", "num_examples", "num_trials"}``: the
mean and sample standard deviation over seeded trials (1 trial where nothing is sampled).
"""

from __future__ import annotations

import itertools
import math
from contextlib import nullcontext
from typing import Any, Callable, Iterable

import torch

from frozen.train import dist
from frozen.config import EvalTaskConfig, EvaluateConfig
from frozen.config import DataConfig
from frozen.eval import tasks as T
from frozen.eval.metrics import caption_scores, exact_match, mean_std, vqa_accuracy
from frozen.model.frozen_model import FrozenModel
from frozen.model.loss import summed_token_loss


def postprocess(text: str, max_words: int | None) -> str:
    """Generated text is already cut at the first newline; optionally keep the first N words."""
    return " ".join(text.split()[:max_words]) if max_words else text.strip()


class Harness:
    def __init__(self, model: FrozenModel, cfg: EvaluateConfig, info: dist.DistInfo, log: Callable[[str], None] = print):
        self.model, self.cfg, self.info, self.log = model, cfg, info, log
        self.data = DataConfig(train_shards="", data_root=cfg.data_root, num_workers=0)
        self.image_size = model.model_cfg.image_size
        amp = torch.bfloat16 if cfg.precision == "bf16" else None
        self.autocast = torch.autocast(info.device.type, dtype=amp) if amp else nullcontext()
        self.rows: list[dict[str, Any]] = []
        self.predictions: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ plumbing
    def _generate(self, queries: Iterable[T.Query], task: EvalTaskConfig, stops: list[str]) -> list[dict[str, Any]]:
        """Batched generation for this rank's queries; returns one record per query.

        Consecutive queries of one group (several questions about one support set) go through
        ``generate_shared``: the support is encoded and run through the LM once, its KV cache
        reused for every batch of queries. Greedy answers are the same either way (tested).
        """
        records, batch = [], []

        def record(q: T.Query, text: str) -> None:
            records.append({"id": q.id, "prompt": q.prompt, "prediction": postprocess(text, task.max_answer_words),
                            "raw": text, "target": q.target, **q.meta})

        def flush():
            with self.autocast:
                texts = self.model.generate([q.images for q in batch], [q.prompt for q in batch],
                                            max_new_tokens=task.max_new_tokens, stop_strings=stops,
                                            min_new_tokens=task.min_new_tokens)
            for q, text in zip(batch, texts):
                record(q, text)
            batch.clear()

        def shared(group: list[T.Query]) -> None:
            first = group[0]
            c, n = first.support_chars, first.support_images
            with self.autocast:
                texts = self.model.generate_shared(
                    first.images[:n], first.prompt[:c], [q.images[n:] for q in group], [q.prompt[c:] for q in group],
                    max_new_tokens=task.max_new_tokens, stop_strings=stops, batch_size=self.cfg.batch_size,
                    min_new_tokens=task.min_new_tokens)
            for q, text in zip(group, texts):
                record(q, text)

        for key, run in itertools.groupby(queries, key=lambda q: q.group):
            run = list(run)
            if key is not None and len(run) > 1:
                shared(run)
                continue
            for query in run:
                batch.append(query)
                if len(batch) == self.cfg.batch_size:
                    flush()
        if batch:
            flush()
        return records

    def _gather(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """All ranks' records on every rank, in a rank-independent order (by id)."""
        merged = [r for part in dist.all_gather_objects(records) for r in part]
        return sorted(merged, key=lambda r: str(r["id"]))

    def _row(self, task: str, metric: str, shots: int, condition: str, values: list[float], n: int) -> None:
        mean, std = mean_std(values)
        self.rows.append({"task": task, "metric": metric, "shots": shots, "condition": condition,
                          "mean": mean, "stddev": std, "num_examples": n, "num_trials": len(values)})

    def _keep(self, task: str, shots: int, condition: str, trial: int, records: list[dict[str, Any]]) -> None:
        if self.info.is_main:
            self.predictions += [{"task": task, "shots": shots, "condition": condition, "trial": trial, **r} for r in records]

    def _limit(self, task: EvalTaskConfig) -> int | None:
        return self.cfg.max_examples if self.cfg.max_examples is not None else task.max_examples

    # ------------------------------------------------------------------ tasks
    def run(self, name: str, task: EvalTaskConfig) -> None:
        for condition in task.conditions:
            T.check_condition(condition, name)
        runner = {"vqa": self.run_vqa, "caption": self.run_caption, "binding": self.run_episodes,
                  "deepmind": self.run_episodes}.get(task.kind)
        if runner is None:
            raise ValueError(f"task {name}: unknown kind {task.kind!r}; use vqa, caption, binding or deepmind")
        if task.kind in ("vqa", "caption") and not task.shards:
            raise ValueError(f"task {name}: set shards= (a shard pattern relative to data_root={self.cfg.data_root})")
        runner(name, task)

    def run_vqa(self, name: str, task: EvalTaskConfig) -> None:
        items = T.load_items(task, self.data, image_size=self.image_size, rank=self.info.rank,
                             world_size=self.info.world_size, limit=self._limit(task))
        pool = T.load_demo_pool(task, self.data, image_size=self.image_size) if max(task.shots) > 0 else None
        for shots in task.shots:
            for condition in task.conditions:
                if condition == "text_demos" and shots == 0:
                    continue  # identical to "image" without demonstrations
                trials = task.num_trials if shots > 0 else 1
                overall, by_type, n = [], {}, 0
                for trial in range(trials):
                    queries = T.vqa_queries(items, pool, task, shots=shots, condition=condition, seed=self.cfg.seed, trial=trial)
                    records = self._gather(self._generate(queries, task, ["\n"]))
                    for r in records:
                        r["score"] = vqa_accuracy(r["prediction"], r["target"])
                    n = len(records)
                    overall.append(sum(r["score"] for r in records) / max(n, 1))
                    types = sorted({r.get("answer_type") for r in records if r.get("answer_type")})
                    for t in types:
                        scores = [r["score"] for r in records if r.get("answer_type") == t]
                        by_type.setdefault(t, []).append(sum(scores) / len(scores))
                    self._keep(name, shots, condition, trial, records)
                    self.log(f"{name} shots={shots} {condition} trial {trial}: vqa accuracy {overall[-1]:.3f} (n={n})")
                self._row(name, "vqa_accuracy", shots, condition, overall, n)
                for t, values in by_type.items():
                    self._row(name, f"vqa_accuracy[{t}]", shots, condition, values, n)

    def run_caption(self, name: str, task: EvalTaskConfig) -> None:
        items = T.load_items(task, self.data, image_size=self.image_size, rank=self.info.rank,
                             world_size=self.info.world_size, limit=self._limit(task))
        tok = self.model.tokenizer
        start = tok.bos_token or tok.eos_token
        for condition in task.conditions:
            if condition == "text_demos":
                continue  # captioning has no demonstrations
            queries = T.caption_queries(items, task, condition=condition, start_text=start)
            records = self._gather(self._generate(queries, task, ["\n"]))
            n = len(records)
            scores = caption_scores({r["id"]: r["target"] for r in records}, {r["id"]: [r["prediction"]] for r in records})
            self._keep(name, 0, condition, 0, records)
            for metric in ("BLEU-4", "CIDEr"):
                self._row(name, metric, 0, condition, [scores[metric]], n)
            self.log(f"{name} {condition}: BLEU-4 {scores['BLEU-4']:.3f} CIDEr {scores['CIDEr']:.3f} (n={n})")
        if "image" in task.conditions:
            n = sum(dist.all_gather_objects(len(items)))
            self._row(name, "perplexity", 0, "image", [self.perplexity(items)], n)

    @torch.no_grad()
    def perplexity(self, items: list[Any]) -> float:
        """exp(mean caption-token cross-entropy) with the image prefix, over all ranks' items."""
        from frozen.data.collate import Collator

        collate = Collator(self.model.tokenizer, self.data.max_length)
        totals = torch.zeros(2, dtype=torch.float64)  # [summed CE, target tokens]
        self.model.eval()
        for start in range(0, len(items), self.cfg.batch_size):
            chunk = items[start : start + self.cfg.batch_size]
            summed, n = summed_token_loss(self.model, collate(chunk), self.autocast)
            totals += torch.tensor([summed, n], dtype=torch.float64)
        totals = dist.all_reduce_sum(totals.to(self.info.device)).cpu()
        return math.exp(min(50.0, (totals[0] / totals[1].clamp(min=1)).item()))

    def run_episodes(self, name: str, task: EvalTaskConfig) -> None:
        for ways in task.ways:
            for shots in task.inner_shots:
                trials = task.num_trials if task.kind == "binding" else 1  # released sets are fixed
                episode_sets = [T.load_episodes(task, ways=ways, shots=shots, seed=self.cfg.seed + t) for t in range(trials)]
                limit = self._limit(task)
                episode_sets = [eps[:limit] if limit else eps for eps in episode_sets]
                label = f"{name}_{ways}way"
                for induction in task.task_induction:
                    if induction and not all(ep.task_induction for eps in episode_sets for ep in eps):
                        self.log(f"{label} shots={shots}: no task-induction text in this set (Fast-/Guided-VQA); skipped")
                        continue
                    for condition in task.conditions:
                        cond = condition + ("+induction" if induction else "")
                        accs, n = [], 0
                        for trial, episodes in enumerate(episode_sets):
                            # Split whole support groups across ranks (a group is one episode when
                            # each support set has a single query): item i -> rank i % world.
                            groups = {key: i for i, key in enumerate(dict.fromkeys(
                                ep.support_id or f"#{j}" for j, ep in enumerate(episodes)))}
                            mine = [ep for j, ep in enumerate(episodes)
                                    if groups[ep.support_id or f"#{j}"] % self.info.world_size == self.info.rank]
                            queries = T.episode_queries(mine, induction=induction, condition=condition)
                            records = self._gather(self._generate(queries, task, ["\n"]))
                            for r in records:
                                r["score"] = exact_match(r["prediction"], r["target"])
                            n = len(records)
                            accs.append(sum(r["score"] for r in records) / max(n, 1))
                            self._keep(label, shots, cond, trial, records)
                        self._row(label, "accuracy", shots, cond, accs, n)
                        self.log(f"{label} shots={shots} {cond}: accuracy {accs[0] if len(accs) == 1 else sum(accs) / len(accs):.3f} "
                                 f"(chance {1 / ways:.3f}, n={n}, trials={len(accs)})")
