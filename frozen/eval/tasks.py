"""Evaluation items and their prompts, per task kind and condition (no model, no scoring here).

A :class:`Query` is what the model sees (interleaved prompt + images) and what it is scored
against. Conditions (``frozen.config.EVAL_CONDITIONS``), reported side by side:

* ``image``: every image present (the regular setting);
* ``no_image``: no image and no ``<image>`` marker anywhere: what the bare LM guesses from text;
* ``black_images``: the ``image`` prompt with every image replaced by zeros (black), so each image
  still contributes its k prefix tokens: the paper's train-blind evaluation (:func:`black_out`);
* ``text_demos``: demonstrations without their images, the query with its image (few-shot only).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Sequence

import torch

from frozen.config import BindingTaskConfig, CaptionTaskConfig, DataConfig, DeepMindTaskConfig, VqaTaskConfig
from frozen.data.pipeline import iter_eval_samples
from frozen.data.samples import _answer_strings, vqa_answer
from frozen.errors import DataError
from frozen.eval.deepmind import load_deepmind_task
from frozen.eval.episodes import NAMING_TASKS, Episode, build_easyvqa_binding, episode_parts
from frozen.model.prompts import IMAGE_MARKER, Prompt, query_rng, render, sample_shots


@dataclass
class Query:
    id: str
    prompt: str  # text with one <image> marker per entry of images
    images: list[Any]  # [3, S, S] tensors or PIL images
    target: Any  # vqa: the answers list (None on a test split); caption: references; episode: the answer
    meta: dict[str, Any] = field(default_factory=dict)
    # Queries with the same `group` share a support: `parts` = (support, query) prompts whose
    # concatenation is `prompt` + `images`. The harness then runs that support through the LM once.
    group: str | None = None
    parts: tuple[Prompt, Prompt] | None = None

    @classmethod
    def grouped(cls, id: str, support: Prompt, query: Prompt, group: str, **fields: Any) -> Query:
        """A query made of a shared ``support`` and its own ``query`` part (prompt and images derived)."""
        full = support + query
        return cls(id=id, prompt=full.text, images=list(full.images), group=group, parts=(support, query), **fields)


def black_out(queries: Iterable[Query], image_size: int) -> Iterator[Query]:
    """The same queries with every image replaced by a black ``[3, S, S]`` image (all zeros in the
    [0, 1] input range, as ``trainer.blind`` feeds in training); prompts and markers unchanged."""
    black = torch.zeros(3, image_size, image_size)
    for q in queries:
        parts = tuple(Prompt(p.texts, [black] * p.num_images) for p in q.parts) if q.parts else None
        yield replace(q, images=[black] * len(q.images), parts=parts)


def answers_of(meta: dict[str, Any]) -> list[str] | None:
    """A VQA sample's human answers as strings, or None when it has none (a test split)."""
    answers = _answer_strings(meta.get("answers"))
    return answers or None


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

    def demo(self, index: int) -> tuple[str, torch.Tensor, dict[str, Any]]:
        key, image, meta = self.examples[index]
        return key, image.float().div_(255), meta


def load_items(task: VqaTaskConfig | CaptionTaskConfig, data: DataConfig, *, image_size: int, rank: int,
               world_size: int, limit: int | None) -> list[Any]:
    """This rank's share of the first ``limit`` items of ``task.shards`` (sample i -> rank i % world)."""
    mine = None if limit is None else len(range(rank, limit, world_size))
    items = []
    for example in iter_eval_samples(task.shards, image_size=image_size, rank=rank, world_size=world_size, cfg=data):
        if mine is not None and len(items) >= mine:
            break
        items.append(example)
    return items


def load_demo_pool(name: str, task: VqaTaskConfig, data: DataConfig, *, image_size: int) -> DemoPool:
    """The same pool on every rank: the first ``demo_pool_size`` samples (all when None) of the demo
    split. Every demonstration needs answers: a split without them fails with one line."""
    shards = task.demo_shards or task.shards
    pool = []
    for example in iter_eval_samples(shards, image_size=image_size, rank=0, world_size=1, cfg=data):
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

    ``black_images`` is built as ``image`` here; :func:`black_out` then replaces the pixels.
    ``meta["demo_keys"]`` lists the demonstrations used (provenance; never the query's own image).
    """
    with_images = condition in ("image", "black_images")
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
            parts.append(IMAGE_MARKER + question)
            images.append(ex.image)
        meta = {k: ex.meta.get(k) for k in ("question", "answer_type", "question_type", "question_id", "image_id")}
        meta["demo_keys"] = demo_keys
        yield Query(id=str(ex.meta.get("question_id", ex.key)), prompt=task.separator.join(parts), images=images,
                    target=answers_of(ex.meta), meta=meta)


# ------------------------------------------------------------------------------------- captions
def caption_queries(items: Sequence[Any], task: CaptionTaskConfig, *, condition: str,
                    start_text: str) -> Iterator[Query]:
    """``<image>{caption_prompt}``; ``no_image`` starts from ``caption_prompt`` or, when that is
    empty, ``start_text`` (the LM's BOS/EOS), with no image."""
    for ex in items:
        refs = list(ex.meta.get("captions") or [])
        if condition == "no_image":
            prompt, images = task.caption_prompt or start_text, []
        else:
            prompt, images = IMAGE_MARKER + task.caption_prompt, [ex.image]
        yield Query(id=ex.key, prompt=prompt, images=images, target=refs)


# ------------------------------------------------------------------------------------- episodes
def load_episodes(task: BindingTaskConfig | DeepMindTaskConfig, *, ways: int, shots: int, repeats: int,
                  seed: int) -> list[Episode]:
    """One set of episodes for (ways, inner shots, repeats), with the task's query templates."""
    if isinstance(task, BindingTaskConfig):
        episodes = build_easyvqa_binding(split=task.split, ways=ways, shots=shots, num_episodes=task.num_episodes,
                                         seed=seed, category=task.category,
                                         queries_per_episode=task.queries_per_episode)
    else:
        if not task.root or not task.task:
            raise DataError("a deepmind task needs root= (the extracted archives) and task= (e.g. open_ended_mi); "
                            "fetch them with scripts/download_fewshot.sh")
        episodes = load_deepmind_task(task.root, task.task, ways=ways, shots=shots)
    for ep in episodes:
        ep.repeats = repeats
        ep.question_template = task.question_template
        if ep.task in NAMING_TASKS:
            ep.question, ep.answer_prefix = task.naming_question, task.answer_prefix
    return episodes


def episode_queries(episodes: Sequence[Episode], *, induction: bool, condition: str) -> Iterator[Query]:
    """One query per episode; ``black_images`` is built as ``image`` (see :func:`black_out`)."""
    for ep in episodes:
        support, query = episode_parts(ep, task_induction=induction, with_images=condition in ("image", "black_images"),
                                       query_image=condition != "no_image")
        yield Query.grouped(ep.episode_id, support, query, ep.support_id, target=ep.answer,
                            meta={"episode_task": ep.task})
