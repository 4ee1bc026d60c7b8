"""DeepMind's released few-shot sets (the paper's own benchmarks), read as
:class:`~frozen.eval.episodes.Episode` lists.

``load_deepmind_task(root, task, ways=..., shots=...)`` for ``task`` in :data:`DEEPMIND_TASKS`;
fetch the sets with ``scripts/download_fewshot.sh``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from frozen.errors import DataError
from frozen.eval.episodes import NAMING_ANSWER_PREFIX, NAMING_QUESTION, NAMING_TASKS, Episode, task_induction_text

DEEPMIND_TASKS: tuple[str, ...] = ("open_ended_mi", "real_name_mi", "fast_vqa", "guided_vqa")

# The release documents file names but not the json keys. The first name of each tuple is the one
# seen in public code reading the real files (question_id, image_i, caption_i, question_image,
# question, answer); the others are accepted in case a set or a re-packaging differs.
_ID_KEYS = ("question_id", "id", "qid", "episode_id")
_QUERY_IMAGE_KEYS = ("question_image", "query_image", "question_image_path", "query_image_path")
_QUESTION_KEYS = ("question", "question_text", "query_text")
_ANSWER_KEYS = ("answer", "answers", "label", "target")
_IMAGE_LIST_KEYS = ("images", "support_images", "image_paths", "support_image_paths")
_TEXT_LIST_KEYS = ("captions", "texts", "support_captions", "support_texts")
_NUMBERED_IMAGE = re.compile(r"(?:image|support_image|img)_(\d+)")
_NUMBERED_TEXT = re.compile(r"(?:caption|text|support_caption|support_text)_(\d+)")
_NAME_CAPTION = re.compile(r"\s*this is an? (.+?)\s*\.?\s*", re.IGNORECASE)


def deepmind_json_path(root: str | os.PathLike, task: str, *, ways: int, shots: int) -> Path:
    """``{root}/{task}/{task}_shots_{shots}_ways_{ways}_all_questions.json`` (``root`` may also be
    the extracted task folder itself)."""
    if task not in DEEPMIND_TASKS:
        raise ValueError(f"unknown DeepMind few-shot task {task!r}; choose one of {', '.join(DEEPMIND_TASKS)}")
    name = f"{task}_shots_{shots}_ways_{ways}_all_questions.json"
    folders = [Path(root) / task, Path(root)]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    found = sorted({p.name for d in folders if d.is_dir() for p in d.glob(f"{task}_shots_*_all_questions.json")})
    raise DataError(
        f"no {name} in {folders[0]} or {folders[1]} (found: {', '.join(found) or 'none'}); "
        "fetch the sets with scripts/download_fewshot.sh"
    )


def _first(record: dict, keys: Sequence[str]) -> tuple[str, Any] | None:
    return next(((k, record[k]) for k in keys if k in record), None)


def _numbered(record: dict, pattern: re.Pattern) -> list[Any] | None:
    found = {int(m.group(1)): v for k, v in record.items() if (m := pattern.fullmatch(k))}
    return [found[i] for i in sorted(found)] if found else None


def _support_lists(record: dict) -> tuple[list[Any], list[Any]] | None:
    images = _numbered(record, _NUMBERED_IMAGE) or (_first(record, _IMAGE_LIST_KEYS) or (None, None))[1]
    texts = _numbered(record, _NUMBERED_TEXT) or (_first(record, _TEXT_LIST_KEYS) or (None, None))[1]
    if not isinstance(images, list) or not isinstance(texts, list) or len(images) != len(texts) or not images:
        return None
    return images, texts


def _records(data: Any, path: Path) -> list[dict]:
    if isinstance(data, dict):  # {"questions": [...]} or {question_id: {...}}
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else list(data.values())
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a list of question dicts, got {type(data).__name__}")
    return data


def _layout_error(path: Path, index: int, record: dict, task: str) -> DataError:
    question = f", a question ({'/'.join(_QUESTION_KEYS)})" if task not in NAMING_TASKS else ""
    return DataError(
        f"{path}: unrecognised layout in question #{index}: keys {sorted(record)}; expected a query image "
        f"({'/'.join(_QUERY_IMAGE_KEYS)}), support images (image_1..image_N or {'/'.join(_IMAGE_LIST_KEYS)}) with "
        f"as many captions (caption_1..caption_N or {'/'.join(_TEXT_LIST_KEYS)}), an answer ({'/'.join(_ANSWER_KEYS)})"
        f"{question}"
    )


def _resolve(folder: Path, value: Any, path: Path, qid: str) -> Path:
    if not isinstance(value, str) or not value:
        raise DataError(f"{path}: question {qid} has an image entry {value!r} that is not a file name")
    for candidate in (folder / value, folder / Path(value).name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{path}: question {qid} names image {value!r}, which is not at {folder / value}")


def _strip_naming(text: str) -> str:
    """``"This is a dax."`` -> ``"dax"``; other text unchanged."""
    m = _NAME_CAPTION.fullmatch(text)
    return m.group(1) if m else text.strip()


def load_deepmind_task(root: str | os.PathLike, task: str, *, ways: int, shots: int) -> list[Episode]:
    """All episodes of one released set, e.g. ``load_deepmind_task("data/fewshot", "fast_vqa", ways=2, shots=1)``.

    Image entries are file names relative to the json's folder. Naming tasks (``open_ended_mi``,
    ``real_name_mi``) get the paper's query ``"Q: What is this? A: This is a"`` whatever their
    ``question`` field says (kept in ``metadata["raw_question"]``), an answer stripped to the bare
    name, and a task induction built from the names in their captions. VQA tasks keep their
    question and have no task induction. Raises :class:`~frozen.errors.DataError` naming the file
    for a missing json, an unrecognised layout or a missing image.
    """
    path = deepmind_json_path(root, task, ways=ways, shots=shots)
    try:
        records = _records(json.loads(path.read_text()), path)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    episodes = []
    for index, record in enumerate(records):
        support = _support_lists(record)
        query = _first(record, _QUERY_IMAGE_KEYS)
        answer = _first(record, _ANSWER_KEYS)
        question = _first(record, _QUESTION_KEYS)
        if support is None or query is None or answer is None or (task not in NAMING_TASKS and question is None):
            raise _layout_error(path, index, record, task)
        qid = str((_first(record, _ID_KEYS) or (None, index + 1))[1])
        answers = answer[1] if isinstance(answer[1], list) else [answer[1]]
        texts = [str(t) for t in support[1]]
        meta: dict[str, Any] = {"source": str(path), "num_support": len(texts)}
        if len(answers) > 1:
            meta["answers"] = [str(a) for a in answers]
        if task in NAMING_TASKS:
            # Induction only when every caption names its image ("This is a dax.") and 2+ names occur.
            names = list(dict.fromkeys(_strip_naming(t) for t in texts if _NAME_CAPTION.fullmatch(t)))
            all_named = all(_NAME_CAPTION.fullmatch(t) for t in texts)
            induction = task_induction_text(names) if all_named and len(names) >= 2 else ""
            meta["raw_question"] = "" if question is None else str(question[1])
            q_text, prefix, ans = NAMING_QUESTION, NAMING_ANSWER_PREFIX, _strip_naming(str(answers[0]))
        else:
            induction, q_text, prefix, ans = "", str(question[1]).strip(), "", str(answers[0]).strip()
        folder = path.parent
        episodes.append(Episode(
            source=task, episode_id=qid,
            support=[(_resolve(folder, img, path, qid), text) for img, text in zip(support[0], texts)],
            query_image=_resolve(folder, query[1], path, qid),
            question=q_text, answer=ans, ways=ways, shots=shots,
            task_induction=induction, answer_prefix=prefix, metadata=meta,
        ))
    return episodes
