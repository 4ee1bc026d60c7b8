"""VQA: the questions of a shard split, demonstrations from an answered pool, prompts per condition,
greedy answers, the official VQA accuracy per setting and answer type.

Conditions (``frozen.config.EVAL_CONDITIONS``): ``image`` (every image present), ``no_image`` (no
image and no ``<image>`` marker: what the bare LM guesses from text), ``black_images`` (``image``
with black pixels, :func:`frozen.eval.answer.black_out`), ``text_demos`` (demonstrations without
their images, the query with its image) and ``text_first`` (the position check, run at 0 shots only:
:data:`frozen.eval.position.POSITION_LINE` right before the query's image). Rows: ``shots`` and, with
demonstrations, ``demo_pool_size``.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Sequence

import torch

from frozen.config import SampleTextConfig, VqaTaskConfig
from frozen.core import dist
from frozen.data.pipeline import iter_eval_samples
from frozen.data.samples import _answer_strings, vqa_answer
from frozen.errors import DataError
from frozen.eval.answer import Query, skip_text
from frozen.eval.context import EvalContext
from frozen.eval.metrics import vqa_accuracy
from frozen.eval.position import GAP_LABEL, POSITION_LINE, TEXT_FIRST, gap_text, position_gaps
from frozen.model.prompts import IMAGE_MARKER, query_rng, render, sample_shots


def answers_of(meta: dict[str, Any]) -> list[str] | None:
    """A VQA sample's human answers as strings, or None when it has none (a test split)."""
    answers = _answer_strings(meta.get("answers"))
    return answers or None


class DemoPool:
    """Demonstrations held in memory (uint8 images: 4x smaller than float, exactly reversible)."""

    def __init__(self, examples: Sequence[Any]):
        self.examples = [(e.key, (e.image * 255).round().to(torch.uint8), e.meta) for e in examples]
        self.by_image: dict[Any, list[int]] = {}
        self.by_key: dict[str, int] = {}
        for i, (key, _, meta) in enumerate(self.examples):
            self.by_key[key] = i
            if meta.get("image_id") is not None:
                self.by_image.setdefault(meta["image_id"], []).append(i)

    def __len__(self) -> int:
        return len(self.examples)

    def excluded_for(self, key: str, meta: dict[str, Any]) -> set[int]:
        """The query itself and every question about the same image: they would leak the answer."""
        out = set(self.by_image.get(meta.get("image_id"), [])) if meta.get("image_id") is not None else set()
        if key in self.by_key:
            out.add(self.by_key[key])
        return out

    def demo(self, index: int) -> tuple[str, torch.Tensor, dict[str, Any]]:
        key, image, meta = self.examples[index]
        return key, image.float().div_(255), meta


def load_demo_pool(name: str, task: VqaTaskConfig, text: SampleTextConfig, *, data_root: str,
                   image_size: int) -> DemoPool:
    """The same pool on every rank: the first ``demo_pool_size`` samples (all when None) of the demo
    split. Every demonstration needs answers: a split without them fails with one line."""
    shards = task.demo_shards or task.shards
    pool = []
    for example in iter_eval_samples(shards, data_root=data_root, image_size=image_size, text=text):
        if task.demo_pool_size is not None and len(pool) >= task.demo_pool_size:
            break
        if answers_of(example.meta) is None:
            which = (f"demo_shards={task.demo_shards}" if task.demo_shards
                     else f"demo_shards (unset, so shards={shards})")
            raise DataError(f"task {name}: {which} holds questions without answers ({example.key}), and "
                            "demonstrations need answers: set demo_shards to a split converted with --annotations")
        pool.append(example)
    if not pool:
        raise DataError(f"task {name}: demo_shards={shards} holds no questions; demonstrations need an answered split")
    return DemoPool(pool)


def vqa_queries(items: Sequence[Any], pool: DemoPool | None, task: VqaTaskConfig, *, shots: int, condition: str,
                seed: int, trial: int) -> Iterator[Query]:
    """``[<image>]Q: .. A: answer \\n ... [<image>]Q: {question} A:`` per item, demos seeded per query.

    ``black_images`` is built as ``image`` here; :func:`frozen.eval.answer.black_out` then replaces the pixels.
    ``text_first`` is ``image`` with :data:`~frozen.eval.position.POSITION_LINE` right before the query's
    ``<image>`` (at 0 shots: the prompt's first line); demonstrations as under ``image``.
    ``meta["demo_keys"]`` lists the demonstrations used (provenance; never the query's own image).
    """
    with_images = condition in ("image", "black_images", TEXT_FIRST)
    lead = POSITION_LINE if condition == TEXT_FIRST else ""  # text before the query's image
    for ex in items:
        parts, images, demo_keys = [], [], []
        if shots:
            rng = query_rng(seed, trial, ex.key)
            for i in sample_shots(len(pool), shots, rng, exclude=pool.excluded_for(ex.key, ex.meta)):
                key, image, meta = pool.demo(i)
                demo_keys.append(key)
                text = (render(task.prompt, question=meta["question"])
                        + render(task.demo_answer, answer=vqa_answer(meta)))
                if with_images:
                    parts.append(IMAGE_MARKER + text)
                    images.append(image)
                else:
                    parts.append(text)
        question = render(task.prompt, question=ex.meta["question"])
        if condition == "no_image":
            parts.append(question)
        else:
            parts.append(lead + IMAGE_MARKER + question)
            images.append(ex.image)
        meta = {k: ex.meta.get(k) for k in ("question", "answer_type", "question_type", "question_id", "image_id")}
        meta["demo_keys"] = demo_keys
        yield Query(id=str(ex.meta.get("question_id", ex.key)), prompt=task.separator.join(parts), images=images,
                    target=answers_of(ex.meta), meta=meta)


def _question_id(qid: str) -> int | str:
    return int(qid) if str(qid).isdigit() else qid


def run_vqa(name: str, task: VqaTaskConfig, ctx: EvalContext) -> None:
    """Official VQA accuracy per (shots, condition), mean over trials, and per answer type.

    A split without answers (VQAv2 test-dev/test-std) is not scored: each setting writes the
    official server's file ``[{"question_id": int, "answer": str}]`` and a note says why.
    """
    if not task.shards:
        raise DataError(f"task {name}: set shards= (a shard pattern relative to data_root={ctx.cfg.data_root})")
    items = ctx.items(task)
    unanswered = sum(dist.all_gather_objects(sum(answers_of(ex.meta) is None for ex in items)))
    total = sum(dist.all_gather_objects(len(items)))
    if 0 < unanswered < total:
        raise DataError(f"task {name}: {unanswered} of {total} questions in shards={task.shards} have no answers; "
                        "evaluate an answered split or a test split, not a mixture")
    scored = unanswered == 0
    pool = (load_demo_pool(name, task, ctx.text, data_root=ctx.cfg.data_root, image_size=ctx.image_size)
            if max(task.shots) > 0 else None)
    for shots, condition in itertools.product(task.shots, task.conditions):
        if condition == "text_demos" and shots == 0:
            continue  # identical to "image" without demonstrations
        if condition == TEXT_FIRST and shots > 0:
            continue  # the position check is 0-shot: with demonstrations the query image already follows text
        settings = {"shots": shots}
        extra = {"demo_pool_size": len(pool)} if shots > 0 else {}  # the pool the demonstrations came from
        overall, by_type, type_n, n, skipped = [], {}, {}, 0, {}
        for trial in range(task.num_trials if shots > 0 else 1):
            queries = vqa_queries(items, pool, task, shots=shots, condition=condition, seed=ctx.cfg.seed, trial=trial)
            records, skipped = ctx.answerer.answer(queries, task, condition)  # n and skipped: the last trial's
            n = len(records)
            if not scored:
                ctx.store.submissions[f"{name}-shots{shots}-{condition}-trial{trial}.json"] = [
                    {"question_id": _question_id(r["id"]), "answer": r["prediction"]} for r in records]
                if skipped:
                    ctx.store.notes.append(f"{name} shots={shots} {condition} trial {trial}: the submission lacks "
                                           f"{sum(skipped.values())} questions ({skip_text(skipped)[2:]})")
                ctx.store.keep(name, settings, condition, trial, records)
                continue
            for r in records:
                r["score"] = vqa_accuracy(r["prediction"], r["target"])
            ctx.store.keep(name, settings, condition, trial, records)
            if not records:  # every question of this trial was too long: no score
                ctx.log(f"{name} shots={shots} {condition} trial {trial}: no question fits{skip_text(skipped)}")
                continue
            overall.append(sum(r["score"] for r in records) / n)
            for t in sorted({r.get("answer_type") for r in records if r.get("answer_type")}):
                scores = [r["score"] for r in records if r.get("answer_type") == t]
                by_type.setdefault(t, []).append(sum(scores) / len(scores))
                type_n[t] = len(scores)
            ctx.log(f"{name} shots={shots} {condition} trial {trial}: vqa accuracy {overall[-1]:.3f} "
                    f"(n={n}{skip_text(skipped)})")
        if scored:
            ctx.store.add_row(name, "vqa_accuracy", condition, overall, n, settings, skipped, **extra)
            for t, values in by_type.items():
                ctx.store.add_row(name, f"vqa_accuracy[{t}]", condition, values, type_n[t], settings, **extra)
    for gap in position_gaps([r for r in ctx.store.rows if r["task"] == name]).values():
        ctx.log(f"{name}: {GAP_LABEL} at 0 shots: {gap_text(gap)} (95% interval)")
    if not scored:
        ctx.store.notes.append(f"{name}: no score rows: its {total} questions have no answers (a test split); "
                               f"predictions in the official server format are in submissions/{name}-*.json")
