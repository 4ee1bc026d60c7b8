"""Evaluation items and their prompts, per task kind and condition.

A :class:`Query` is what the model sees (interleaved prompt + images) and what it is scored
against. Conditions, reported side by side:

* ``image``: every image present (the regular setting);
* ``blind``: no image anywhere (the paper's blind baseline: what the LM guesses from text alone);
* ``text_demos``: demonstrations without their images, the query with its image (few-shot only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from frozen.config import EvalTaskConfig
from frozen.config import DataConfig
from frozen.data.pipeline import iter_eval_samples
from frozen.eval.episodes import Episode, build_easyvqa_binding, episode_prompt, load_deepmind_task
from frozen.model.prompts import IMAGE_MARKER, query_rng, render, sample_shots
from frozen.data.samples import vqa_answer

CONDITIONS = ("image", "blind", "text_demos")


@dataclass
class Query:
    id: str
    prompt: str  # text with one <image> marker per entry of images
    images: list[Any]  # [3, S, S] tensors or PIL images
    target: Any  # vqa: the answers list; caption: references; episode: the answer
    meta: dict[str, Any] = field(default_factory=dict)
    # Queries with the same `group` start with the same support: prompt[:support_chars] and
    # images[:support_images]. The harness then runs that support through the LM once.
    group: str | None = None
    support_chars: int = 0
    support_images: int = 0


def check_condition(condition: str, task_name: str) -> None:
    if condition not in CONDITIONS:
        raise ValueError(f"task {task_name}: unknown condition {condition!r}; use {', '.join(CONDITIONS)}")


# ----------------------------------------------------------------------------------------- VQA
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

    def demo(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        _, image, meta = self.examples[index]
        return image.float().div_(255), meta


def load_items(task: EvalTaskConfig, data: DataConfig, *, image_size: int, rank: int, world_size: int,
               limit: int | None) -> list[Any]:
    """This rank's share of the first ``limit`` items of ``task.shards`` (sample i -> rank i % world)."""
    mine = None if limit is None else len(range(rank, limit, world_size))
    items = []
    for example in iter_eval_samples(task.shards, image_size=image_size, rank=rank, world_size=world_size, cfg=data):
        if mine is not None and len(items) >= mine:
            break
        items.append(example)
    return items


def load_demo_pool(task: EvalTaskConfig, data: DataConfig, *, image_size: int) -> DemoPool:
    """The same pool on every rank: the first ``demo_pool_size`` samples of the demo split."""
    shards = task.demo_shards or task.shards
    pool = []
    for example in iter_eval_samples(shards, image_size=image_size, rank=0, world_size=1, cfg=data):
        if len(pool) >= task.demo_pool_size:
            break
        pool.append(example)
    return DemoPool(pool)


def vqa_queries(items: Sequence[Any], pool: DemoPool | None, task: EvalTaskConfig, *, shots: int, condition: str,
                seed: int, trial: int) -> Iterator[Query]:
    """``[<image>]Q: .. A: answer \\n ... [<image>]Q: {question} A:`` per item, demos seeded per query."""
    for ex in items:
        parts, images = [], []
        if shots:
            rng = query_rng(seed, trial, ex.key)
            for i in sample_shots(len(pool), shots, rng, exclude=pool.excluded_for(ex.key, ex.meta)):
                image, meta = pool.demo(i)
                text = render(task.prompt, question=meta["question"]) + render(task.demo_answer, answer=vqa_answer(meta))
                if condition == "image":
                    parts.append(IMAGE_MARKER + text)
                    images.append(image)
                else:
                    parts.append(text)
        question = render(task.prompt, question=ex.meta["question"])
        if condition == "blind":
            parts.append(question)
        else:
            parts.append(IMAGE_MARKER + question)
            images.append(ex.image)
        meta = {k: ex.meta.get(k) for k in ("question", "answer_type", "question_type", "question_id", "image_id")}
        yield Query(id=str(ex.meta.get("question_id", ex.key)), prompt=task.separator.join(parts), images=images,
                    target=list(ex.meta["answers"]), meta=meta)


# ------------------------------------------------------------------------------------- captions
def caption_queries(items: Sequence[Any], task: EvalTaskConfig, *, condition: str, start_text: str) -> Iterator[Query]:
    """``<image>{caption_prompt}``; blind captioning starts from ``start_text`` (the LM's BOS/EOS)."""
    for ex in items:
        refs = list(ex.meta.get("captions") or [])
        if condition == "blind":
            prompt, images = task.caption_prompt or start_text, []
        else:
            prompt, images = IMAGE_MARKER + task.caption_prompt, [ex.image]
        yield Query(id=ex.key, prompt=prompt, images=images, target=refs)


# ------------------------------------------------------------------------------------- episodes
def load_episodes(task: EvalTaskConfig, *, ways: int, shots: int, seed: int) -> list[Episode]:
    if task.kind == "binding":
        return build_easyvqa_binding(split=task.split, ways=ways, shots=shots, num_episodes=task.num_episodes,
                                     seed=seed, category=task.category, queries_per_episode=task.queries_per_episode)
    if not task.root or not task.task:
        raise ValueError("a deepmind task needs root= (the extracted archives) and task= (e.g. open_ended_mi); "
                         "fetch them with scripts/download_fewshot.sh")
    episodes = load_deepmind_task(task.root, task.task, ways=ways, shots=shots)
    for ep in episodes:
        ep.repeats = task.repeats or ep.repeats
    return episodes


def episode_queries(episodes: Sequence[Episode], *, induction: bool, condition: str) -> Iterator[Query]:
    for ep in episodes:
        prompt, images = episode_prompt(ep, task_induction=induction, with_images=condition == "image",
                                        blind=condition == "blind")
        query_line = prompt.rsplit("\n", 1)[-1]  # the last line is the query (see episode_prompt)
        yield Query(id=ep.episode_id, prompt=prompt, images=images, target=ep.answer,
                    meta={"task": ep.task, "ways": ep.ways, "shots": ep.shots},
                    group=ep.support_id, support_chars=len(prompt) - len(query_line),
                    support_images=len(images) - (condition != "blind"))
