"""easy-VQA (the ``easy_vqa`` pip package, offline) -> caption and VQA shards.

Each 64x64 PNG shows one coloured shape; the package gives ~10 questions per image. Captions
("a blue rectangle") are derived from those questions (:func:`derive_caption`). VQA samples store
the single answer repeated 10 times in ``answers``, so the official 10-annotator VQA accuracy
``min(#matching annotators / 3, 1)`` reduces to exact match.

Output (``{out}``): ``captions-{train,test}-*.tar`` (``{key}.png``, ``{key}.txt``, ``{key}.json``
with image_id, caption, color, shape), ``vqa-{train,test}-*.tar`` (``{key}.png``, ``{key}.json``
with question, answers, multiple_choice_answer, answer_type, question_type, question_id, image_id)
and ``sizes.json``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from frozen.errors import DataError
from frozen.prep.convert import Job, Sample, WriteOptions, write_jobs
from frozen.prep.report import ConvertReport
from frozen.prep.shards import make_key, read_image_file

COLORS = ("red", "green", "blue", "yellow", "gray", "teal", "black", "brown")
SHAPES = ("circle", "rectangle", "triangle")
_WORD = re.compile(r"[a-z]+")
_NEGATION = re.compile(r"\b(not|no)\b")


def question_type(answer: str) -> str:
    """``yes/no``, ``color`` or ``shape`` (by the answer; easy-VQA has nothing else)."""
    if answer in ("yes", "no"):
        return "yes/no"
    return "color" if answer in COLORS else "shape" if answer in SHAPES else "other"


def derive_caption(qas: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """``(color, shape)`` of an image from its questions and answers, or None if not derivable.

    Evidence: an answer that is a colour/shape ("what color is the shape?" -> blue), an attribute
    named in a *what* question ("what is the blue shape?" -> rectangle gives blue), and affirmed
    yes/no questions ("is there a red shape?" yes, "is there not a circle?" no). Without positive
    evidence, an attribute is derived by elimination when denied yes/no questions rule out all
    values but one ("is there a circle?" no, "is a rectangle present?" no -> triangle). Each
    attribute must end with exactly one value, not also denied; otherwise the result is None.
    """
    colors: set[str] = set()
    shapes: set[str] = set()
    not_colors: set[str] = set()
    not_shapes: set[str] = set()
    for question, answer in qas:
        words = _WORD.findall(question.lower())
        named_colors = [w for w in words if w in COLORS]
        named_shapes = [w for w in words if w in SHAPES]
        if answer in ("yes", "no"):
            negated = bool(_NEGATION.search(question.lower()))
            present = (answer == "yes") != negated  # is the named attribute in the image?
            (colors if present else not_colors).update(named_colors)
            (shapes if present else not_shapes).update(named_shapes)
            continue
        colors.update(named_colors)
        shapes.update(named_shapes)
        if answer in COLORS:
            colors.add(answer)
        elif answer in SHAPES:
            shapes.add(answer)
    color = _single(colors, not_colors, COLORS)
    shape = _single(shapes, not_shapes, SHAPES)
    return (color, shape) if color is not None and shape is not None else None


def _single(positive: set[str], negative: set[str], values: Sequence[str]) -> str | None:
    """The one value supported by the evidence, or None (none, several, or contradicted)."""
    candidates = positive or (set(values) - negative)
    if len(candidates) != 1 or candidates & negative:
        return None
    return next(iter(candidates))


def _load_split(split: str) -> tuple[dict[int, str], list[tuple[str, str, int]]]:
    try:
        import easy_vqa
    except ImportError:
        raise DataError("the easy_vqa package is missing; `pip install easy-vqa==1.0` (it ships the data)") from None
    paths = getattr(easy_vqa, f"get_{split}_image_paths")()
    texts, answers, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
    return paths, list(zip(texts, answers, image_ids))


def convert_easyvqa(out_dir: str | Path, *, splits: Sequence[str] = ("train", "test"), prefix: str | None = None,
                    opts: WriteOptions | None = None) -> ConvertReport:
    """Write caption and VQA shards of each split; ``opts.limit`` keeps the first N images
    (by id) and their questions (the others counted as ``beyond_limit``). Images that yield no
    caption are counted as ``caption_underivable`` (their questions still go to the VQA shards).
    Records: images (caption shards) and questions (VQA shards). ``prefix`` names the shards
    ``{prefix}-captions-{split}`` / ``{prefix}-vqa-{split}`` (default: no prefix)."""
    opts = opts or WriteOptions(max_count=1000)
    report = ConvertReport(str(out_dir))
    bad = [s for s in splits if s not in ("train", "test")]
    if bad:
        raise DataError(f"easy-VQA splits are 'train' and 'test', got {', '.join(map(repr, bad))}")
    jobs = []
    for split in splits:
        paths, questions = _load_split(split)
        image_ids = sorted(paths)[: opts.limit] if opts.limit is not None else sorted(paths)
        kept = set(image_ids)
        report.skip("beyond_limit", count=len(paths) - len(kept) + sum(q[2] not in kept for q in questions))
        by_image: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for text, answer, image_id in questions:
            by_image[image_id].append((text, answer))
        # All images in memory (~430 bytes each): read once, used by caption and VQA samples.
        images = {image_id: read_image_file(paths[image_id], verify=opts.verify) for image_id in image_ids}

        # Default arguments bind this split's data: the jobs run after the loop.
        def caption_sample(image_id: int, split: str = split, images: dict = images,
                           by_image: dict = by_image) -> Sample | str:
            derived = derive_caption(by_image[image_id])
            if derived is None:
                return "caption_underivable"
            loaded = images[image_id]
            if isinstance(loaded, str):
                return loaded
            color, shape = derived
            caption = f"a {color} {shape}"
            meta = {"image_id": image_id, "caption": caption, "color": color, "shape": shape, "split": split}
            return (make_key("easyvqa", split, "img", f"{image_id:05d}"),
                    {loaded[1]: loaded[0], "txt": caption, "json": json.dumps(meta)})

        def vqa_sample(item: tuple[int, tuple[str, str, int]], split: str = split,
                       images: dict = images) -> Sample | str:
            question_id, (text, answer, image_id) = item
            loaded = images[image_id]
            if isinstance(loaded, str):
                return loaded
            meta: dict[str, Any] = {
                "question": text, "answers": [answer] * 10, "multiple_choice_answer": answer,
                "answer_type": "yes/no" if answer in ("yes", "no") else "other",
                "question_type": question_type(answer), "question_id": question_id, "image_id": image_id,
            }
            key = make_key("easyvqa", split, "q", f"{question_id:06d}")
            return key, {loaded[1]: loaded[0], "json": json.dumps(meta)}

        # question_id = index in the package's question list: stable across runs and --limit values.
        vqa_items = [(qid, q) for qid, q in enumerate(questions) if q[2] in kept]
        lead = f"{prefix}-" if prefix else ""
        jobs += [Job(f"{lead}captions-{split}", image_ids, caption_sample),
                 Job(f"{lead}vqa-{split}", vqa_items, vqa_sample)]
    write_jobs(report, out_dir, jobs, opts)
    return report


__all__ = ["convert_easyvqa", "derive_caption", "question_type", "COLORS", "SHAPES"]
