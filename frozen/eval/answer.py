"""The generate-and-gather helper every task kind uses: :class:`Query` (what the model sees and what
it is scored against) and :class:`Answerer` (batched generation on this rank, then the records of
all ranks gathered on every rank in an id order, so each rank scores them identically).

Each rank generates answers for its share of the items (split by index, no duplicates, no drops).
Conditions (``frozen.config.EVAL_CONDITIONS``) are built by the kinds' query functions, except
``black_images``: the ``image`` queries with every image replaced by zeros (:func:`black_out`).

A query whose prompt plus ``max_new_tokens`` needs more positions than the LM has is not generated:
it is filtered out before batching and counted under :data:`TOO_LONG` (the other items of its batch
or support group are answered as usual).
"""

from __future__ import annotations

import itertools
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

import torch

from frozen.config import EvalTaskBase
from frozen.core import dist
from frozen.model.embedding import context_limit, positions_needed
from frozen.model.frozen_model import FrozenModel
from frozen.model.prompts import Prompt

TOO_LONG = "prompt_too_long"
"""The skip reason of a query that does not fit the LM's positions (a row's ``skipped`` key)."""


@dataclass
class Query:
    id: str
    prompt: str  # text with one <image> marker per entry of images
    images: list[Any]  # [3, S, S] tensors or PIL images
    target: Any  # vqa: the answers list (None on a test split); caption: references; episode: the answer
    meta: dict[str, Any] = field(default_factory=dict)
    # Queries with the same `group` share a support: `parts` = (support, query) prompts whose
    # concatenation is `prompt` + `images`. The answerer then runs that support through the LM once.
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


def skip_text(skipped: dict[str, int]) -> str:
    """``", skipped prompt_too_long=3"`` for a log line, ``""`` when nothing was skipped."""
    return "".join(f", skipped {reason}={n}" for reason, n in skipped.items() if n)


def postprocess(text: str, max_words: int | None) -> str:
    """What reaches the metric: the generated text (already cut at the first stop string, ``"\\n"``,
    and stripped by ``generate``), optionally cut to its first ``max_words`` words."""
    return " ".join(text.split()[:max_words]) if max_words else text.strip()


class Answerer:
    """Greedy answers of one model to queries: generated on this rank, gathered from every rank."""

    def __init__(self, model: FrozenModel, *, batch_size: int, autocast: AbstractContextManager, image_size: int):
        self.model, self.batch_size, self.autocast, self.image_size = model, batch_size, autocast, image_size

    def fits(self, query: Query, max_new_tokens: int) -> bool:
        """Whether the query's prompt plus ``max_new_tokens`` fits the LM's positions (always, without a limit)."""
        limit = context_limit(self.model.lm)
        if limit is None:
            return True
        tokenized = Prompt.parse(query.prompt, query.images).tokenize(self.model.tokenizer)
        return positions_needed(tokenized, self.model.model_cfg.num_prefix_tokens) + max_new_tokens <= limit[0]

    def generate(self, queries: Iterable[Query], task: EvalTaskBase) -> tuple[list[dict[str, Any]], int]:
        """Batched greedy generation for this rank's queries, cut at a newline; one record per query
        that fits the LM, and the number of queries skipped as too long (:meth:`fits`).

        Consecutive queries of one group (several questions about one support set) go through
        ``generate_shared``: the support is encoded and run through the LM once, its KV cache
        reused for every batch of queries. Greedy answers are the same either way (tested).
        """
        records: list[dict[str, Any]] = []
        batch: list[Query] = []
        stops = ["\n"]
        too_long = 0

        def runnable() -> Iterator[Query]:  # lazily: the queries (and their images) stream as before
            nonlocal too_long
            for q in queries:
                if self.fits(q, task.max_new_tokens):
                    yield q
                else:
                    too_long += 1

        def record(q: Query, text: str) -> None:
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

        def shared(group: list[Query]) -> None:
            support = group[0].parts[0]
            with self.autocast:
                texts = self.model.generate_shared(
                    None, support, None, [q.parts[1] for q in group],
                    max_new_tokens=task.max_new_tokens, stop_strings=stops, batch_size=self.batch_size,
                    min_new_tokens=task.min_new_tokens)
            for q, text in zip(group, texts):
                record(q, text)

        for key, run in itertools.groupby(runnable(), key=lambda q: q.group):
            run = list(run)
            if key is not None and len(run) > 1 and all(q.parts for q in run):
                shared(run)
                continue
            for query in run:
                batch.append(query)
                if len(batch) == self.batch_size:
                    flush()
        if batch:
            flush()
        return records, too_long

    def gather(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """All ranks' records on every rank, in a rank-independent order (by id)."""
        merged = [r for part in dist.all_gather_objects(records) for r in part]
        return sorted(merged, key=lambda r: str(r["id"]))

    def answer(self, queries: Iterable[Query], task: EvalTaskBase,
               condition: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Generate (with black images under ``black_images``) and gather: every rank's records, and
        ``{TOO_LONG: n}`` over all ranks (``{}`` when nothing was skipped)."""
        if condition == "black_images":
            queries = black_out(queries, self.image_size)
        records, too_long = self.generate(queries, task)
        skipped = sum(dist.all_gather_objects(too_long))
        return self.gather(records), ({TOO_LONG: skipped} if skipped else {})
