"""Few-shot episodes: one in-memory format, DeepMind's released sets, an offline easy-VQA binding set.

An :class:`Episode` is a support set of (image, caption) pairs shown in prompt order, then a query
image with a question; :func:`episode_prompt` renders it as text with ``<image>`` markers (see
:mod:`frozen.model.prompts`) plus the list of images, in the paper's format::

    Answer with dax or blicket.                      <- task induction (optional)
    <image>This is a dax.                            <- support, (1 + repeats) times over
    <image>This is a blicket.
    <image>Q: What is this? A: This is a             <- query (Fast-VQA: "Q: {question} A:")

Sources:

* :func:`frozen.eval.deepmind.load_deepmind_task`: the four sets released with the paper
  (``open_ended_mi``, ``real_name_mi``, ``fast_vqa``, ``guided_vqa``; ``scripts/download_fewshot.sh``).
* :func:`build_easyvqa_binding`: open-ended-miniImageNet-style binding episodes over easy-VQA
  shapes, generated offline and deterministically.

Images are kept as paths and loaded (RGB) when a prompt is rendered.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence, Union

from PIL import Image

from frozen.errors import DataError
from frozen.model.prompts import IMAGE_MARKER, Prompt

ImageRef = Union[str, os.PathLike, Image.Image]
"""An image path (loaded lazily) or an already loaded PIL image."""

# Tasks whose answer is the name given in the support captions ("This is a dax." -> "dax").
NAMING_TASKS = frozenset({"open_ended_mi", "real_name_mi", "easyvqa_binding"})
NONSENSE_NAMES: tuple[str, ...] = (
    "dax", "blicket", "wug", "zib", "toma", "fep", "tufa", "gorp", "kiki", "modi", "zav", "pilk",
)
NAMING_QUESTION = "What is this?"
NAMING_ANSWER_PREFIX = "This is a"


@dataclass
class Episode:
    """One few-shot trial.

    ``support`` holds ``ways * shots`` (image, caption) pairs in prompt order. The query renders as
    ``"Q: {question} A:"`` followed by ``" {answer_prefix}"`` when that is set (naming tasks use
    ``question="What is this?"``, ``answer_prefix="This is a"``; VQA tasks leave it empty), and the
    model should continue with ``answer``. ``repeats`` is the number of *extra* presentations of the
    whole support sequence (0 = shown once): the paper's "repeats" axis repeats the full support
    (every image with its caption, in the same order) after itself, before the query. ``task_induction`` is the
    instruction line (``"Answer with dax or blicket."``), empty when the task has none.
    """

    source: str  # the set it comes from: "easyvqa_binding" or a DeepMind set ("open_ended_mi", ...)
    episode_id: str
    support: list[tuple[ImageRef, str]]
    query_image: ImageRef
    question: str
    answer: str
    ways: int
    shots: int
    repeats: int = 0
    task_induction: str = ""
    answer_prefix: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    # Episodes with the same support_id share their support list (several queries about one
    # support set); evaluation then runs the support through the LM once.
    support_id: str | None = None
    question_template: str = "Q: {question} A:"

    @property
    def query_text(self) -> str:
        text = self.question_template.format(question=self.question)
        return f"{text} {self.answer_prefix}" if self.answer_prefix else text


def load_image(ref: ImageRef) -> Image.Image:
    """An RGB PIL image from a path or an image."""
    if isinstance(ref, Image.Image):
        return ref if ref.mode == "RGB" else ref.convert("RGB")
    with Image.open(ref) as img:
        return img.convert("RGB")


def task_induction_text(names: Sequence[str]) -> str:
    """``"Answer with dax or blicket."``; three or more: ``"Answer with dax, blicket or wug."``."""
    if len(names) < 2:
        raise ValueError(f"task induction needs at least two names, got {list(names)}")
    return f"Answer with {', '.join(names[:-1])} or {names[-1]}."


def episode_parts(
    episode: Episode, *, task_induction: bool, with_images: bool = True, query_image: bool = True
) -> tuple[Prompt, Prompt]:
    """``(support, query)`` prompts of ``episode``: everything its queries share, and the query line.

    Lines are joined with ``"\\n"``; each support line is ``"<image>{caption}"`` and the query is
    ``"<image>{episode.query_text}"``, which ends where the model continues (no trailing space); the
    newline before the query ends the support. ``with_images=False`` drops the support markers and
    images (demonstrations as text only); ``query_image=False`` drops the query's marker and image.
    Both together give a text-only prompt.
    """
    if task_induction and not episode.task_induction:
        raise ValueError(f"episode {episode.episode_id} of {episode.source!r} has no task-induction text")
    lines = [episode.task_induction] if task_induction else []
    images: list[Image.Image] = []
    loaded: dict[int, Image.Image] = {}  # repeats show the same image again: load it once
    for ref, caption in list(episode.support) * (1 + episode.repeats):
        if with_images:
            if id(ref) not in loaded:
                loaded[id(ref)] = load_image(ref)
            images.append(loaded[id(ref)])
            lines.append(IMAGE_MARKER + caption)
        else:
            lines.append(caption)
    support = Prompt.parse("".join(line + "\n" for line in lines), images)
    if not query_image:
        return support, Prompt.parse(episode.query_text)
    return support, Prompt.parse(IMAGE_MARKER + episode.query_text, [load_image(episode.query_image)])


def episode_prompt(
    episode: Episode, *, task_induction: bool, with_images: bool = True, query_image: bool = True
) -> tuple[str, list[Image.Image]]:
    """The interleaved prompt of ``episode`` as text with ``<image>`` markers and its images (one per
    marker, in order): :func:`episode_parts` joined."""
    prompt = Prompt.concat(*episode_parts(episode, task_induction=task_induction, with_images=with_images,
                                          query_image=query_image))
    return prompt.text, list(prompt.images)


# --------------------------------------------------------------------------------------------------
# Offline binding set from easy-VQA.
# --------------------------------------------------------------------------------------------------

EASYVQA_SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle")


@lru_cache(maxsize=2)
def easyvqa_labels(split: str) -> dict[int, tuple[str | None, str | None, str]]:
    """``image id -> (colour, shape, png path)`` of an easy-VQA split.

    Every easy-VQA image holds one shape; its shape and colour are read off the answers of that
    image's open questions (an answer that is a shape name states the shape, "what is the blue
    shape?" -> "circle"; one that is a colour name states the colour). ``None`` where no question
    states it. Raises if two questions disagree.
    """
    import easy_vqa  # imported lazily: only the offline binding set needs it

    if split not in ("train", "test"):
        raise ValueError(f"easy-VQA split must be 'train' or 'test', got {split!r}")
    texts, answers, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
    paths = getattr(easy_vqa, f"get_{split}_image_paths")()
    colours = set(easy_vqa.get_answers()) - set(EASYVQA_SHAPES) - {"yes", "no"}
    colour_of: dict[int, str] = {}
    shape_of: dict[int, str] = {}
    for text, answer, image_id in zip(texts, answers, image_ids):
        table = shape_of if answer in EASYVQA_SHAPES else colour_of if answer in colours else None
        if table is not None and table.setdefault(image_id, answer) != answer:
            raise DataError(
                f"easy-VQA {split} image {image_id}: {text!r} answers {answer!r}, another question {table[image_id]!r}"
            )
    return {i: (colour_of.get(i), shape_of.get(i), paths[i]) for i in sorted(paths)}


def build_easyvqa_binding(
    split: str = "test",
    ways: int = 2,
    shots: int = 1,
    num_episodes: int = 200,
    seed: int = 0,
    names: Sequence[str] = NONSENSE_NAMES,
    category: str = "shape",
    queries_per_episode: int = 1,
) -> list[Episode]:
    """Open-ended-miniImageNet-style binding episodes over easy-VQA images (task ``easyvqa_binding``).

    Categories are shapes (``category="shape"``: circle / rectangle / triangle, any colour, so at
    most 3 ways; each name must bind to a shape across colours) or colour-shape pairs
    (``"color_shape"``, e.g. "red circle": up to 24 ways, as in the paper's 5-way setting). Each
    episode draws ``ways`` categories, gives them the names ``names[:ways]`` in drawn order, shows
    ``shots`` images of each captioned ``"This is a {name}."`` in shuffled order, then a query image
    of one category that is none of the support images. The answer is that category's name; it
    cycles through ``names[:ways]`` so each name is the answer equally often (exactly when
    ``num_episodes`` is a multiple of ``ways``); chance is ``1 / ways``. Episode ``e`` depends only
    on (split, category, ways, shots, seed, e), not on ``num_episodes``.

    ``queries_per_episode=q > 1`` asks q questions about each support set: q distinct query images
    (none in the support), query j of episode e answering ``names[(e * q + j) % ways]``. They are
    returned as q episodes sharing one ``support`` list and ``support_id`` (ids ``...-{e:05d}-q{j}``);
    q = 1 gives exactly the single-query episodes.
    """
    if category not in ("shape", "color_shape"):
        raise ValueError(f"category must be 'shape' or 'color_shape', got {category!r}")
    if ways < 2 or shots < 1 or num_episodes < 1 or queries_per_episode < 1:
        raise ValueError(
            f"need ways >= 2, shots >= 1, num_episodes >= 1, queries_per_episode >= 1; got ways={ways}, shots={shots}, "
            f"num_episodes={num_episodes}, queries_per_episode={queries_per_episode}"
        )
    q = queries_per_episode
    slot_names = list(names[:ways])
    if len(set(slot_names)) < ways:
        raise ValueError(f"{ways} ways need {ways} distinct names, got {list(names)}")
    pools: dict[str, list[int]] = {}
    for image_id, (colour, shape, _) in easyvqa_labels(split).items():
        if shape is not None and (category == "shape" or colour is not None):
            pools.setdefault(shape if category == "shape" else f"{colour} {shape}", []).append(image_id)
    # A category must be able to supply `shots` support images plus its distinct queries.
    need = shots + -(-q // ways)  # at most ceil(q / ways) queries per category
    eligible = sorted(c for c, ids in pools.items() if len(ids) >= need)
    if len(eligible) < ways:
        raise ValueError(
            f"easy-VQA {split} has {len(eligible)} {category} categories with at least {need} images, fewer "
            f"than ways={ways}" + ("; category='color_shape' allows up to 24 ways" if category == "shape" else "")
        )
    labels = easyvqa_labels(split)
    induction = task_induction_text(slot_names)
    episodes = []
    for e in range(num_episodes):
        rng = random.Random(f"easyvqa_binding/{split}/{category}/{ways}/{shots}/{seed}/{e}")
        chosen = rng.sample(eligible, ways)  # chosen[j] is called slot_names[j]
        answer_slots = [(e * q + j) % ways for j in range(q)]  # q = 1: e % ways
        support, queries = [], {}  # queries: answer slot -> its query image ids
        for j, cat in enumerate(chosen):
            ids = rng.sample(pools[cat], shots + answer_slots.count(j))
            queries[j] = ids[shots:]
            support += [(i, f"This is a {slot_names[j]}.") for i in ids[:shots]]
        rng.shuffle(support)
        base_id = f"{split}-{category}-w{ways}-s{shots}-seed{seed}-{e:05d}"
        shared_support = [(labels[i][2], caption) for i, caption in support]
        for j, slot in enumerate(answer_slots):
            query_id = queries[slot].pop(0)
            episodes.append(Episode(
                source="easyvqa_binding", episode_id=base_id if q == 1 else f"{base_id}-q{j}",
                support=shared_support, query_image=labels[query_id][2],
                question=NAMING_QUESTION, answer=slot_names[slot], ways=ways, shots=shots,
                task_induction=induction, answer_prefix=NAMING_ANSWER_PREFIX,
                metadata={
                    "split": split, "category": category, "seed": seed,
                    "name_to_category": dict(zip(slot_names, chosen)),
                    "support_image_ids": [i for i, _ in support], "query_image_id": query_id,
                },
                support_id=base_id if q > 1 else None,
            ))
    return episodes
