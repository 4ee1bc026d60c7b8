"""VQAv2 / OK-VQA questions (+ annotations, absent for test splits) -> VQA shards, one per question.

Records: the questions. A questions file may be a subset of the annotations' split: annotations that
match no question are counted as unused, not as lost records. Before any work the pair is checked:
both files of the right kind (a swapped pair is named as such), the same ``data_subtype``, and
question ids that the annotations actually cover.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from frozen.core.text import unicode_problem
from frozen.errors import DataError
from frozen.prep.coco import split_from_name
from frozen.prep.convert import Job, Sample, Skip, WriteOptions, add_image_hint, load_image, take, write_jobs
from frozen.prep.inputs import VQA_ANNOTATIONS, VQA_QUESTIONS, linked_records, load_json, records_by_id
from frozen.prep.report import ConvertReport
from frozen.prep.shards import make_key

ANNOTATION_FIELDS = ("multiple_choice_answer", "answer_type", "question_type")


def _names(qdata: dict[str, Any], questions: str | Path, split: str | None,
           image_pattern: str | None) -> tuple[str, str]:
    """The output split and image file pattern; everything that cannot be derived is asked for at once."""
    subtype = qdata.get("data_subtype")
    split = split or split_from_name(subtype or "") or split_from_name(Path(questions).name)
    if image_pattern is None and subtype:
        folder = "test2015" if subtype.startswith("test") else subtype  # test-dev images live in test2015
        image_pattern = f"COCO_{folder}_{{image_id:012d}}.jpg"
    missing = [flag for flag, value in (("--split train|val|test", split),
                                        ("--image-pattern 'COCO_val2014_{image_id:012d}.jpg'", image_pattern))
               if value is None]
    if missing:
        raise DataError(f"--questions {str(questions)!r} has no data_subtype to derive them from: pass "
                        + " and ".join(missing))
    try:
        image_pattern.format(image_id=1)
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"--image-pattern {image_pattern!r} is not a format string with only {{image_id}} "
                        f"({type(exc).__name__}: {exc}); example: 'COCO_val2014_{{image_id:012d}}.jpg'") from None
    return split, image_pattern  # type: ignore[return-value]


def _answers(ann: dict[str, Any], where: str) -> list[str] | Skip:
    """The annotator answer strings of one annotation, or a Skip describing the bad entry."""
    out = []
    for j, a in enumerate(ann["answers"]):
        answer = a.get("answer") if isinstance(a, dict) else a
        if not isinstance(answer, str):
            return Skip("malformed_record", f"{where}.answers[{j}]: no 'answer' string")
        out.append(answer)
    return out


def convert_vqa(questions: str | Path, annotations: str | Path | None, image_root: str | Path,
                out_dir: str | Path, *, split: str | None = None, image_pattern: str | None = None,
                prefix: str = "vqa", opts: WriteOptions | None = None) -> ConvertReport:
    """VQA questions (+ annotations) -> ``{prefix}-{split}`` shards, keys ``{prefix}_{question_id}``.

    Each sample: the question's COCO image and ``{key}.json`` with ``question``, ``question_id``,
    ``image_id`` and, from the annotations, ``answers`` (all annotator strings),
    ``multiple_choice_answer``, ``answer_type``, ``question_type`` when present. Image files are
    ``image_root / image_pattern.format(image_id=...)``, by default the COCO name derived from the
    questions' ``data_subtype`` (``COCO_val2014_000000000042.jpg``).
    """
    opts = opts or WriteOptions()
    report, root = ConvertReport(str(out_dir)), Path(image_root)
    qdata = load_json(questions, VQA_QUESTIONS, "--questions")
    adata = load_json(annotations, VQA_ANNOTATIONS, "--annotations") if annotations is not None else None
    split, image_pattern = _names(qdata, questions, split, image_pattern)
    by_qid = records_by_id(report, qdata["questions"], VQA_QUESTIONS.fields, "questions", "question_id")
    answers_by_qid: dict[int, tuple[int, dict[str, Any]]] | None = None
    if adata is not None:
        q_sub, a_sub = qdata.get("data_subtype"), adata.get("data_subtype")
        if q_sub and a_sub and q_sub != a_sub:
            raise DataError(f"--questions {str(questions)!r} is {q_sub} but --annotations {str(annotations)!r} is "
                            f"{a_sub}; pass the annotations of the same split")
        answers_by_qid = {ann["question_id"]: (i, ann) for i, ann in linked_records(
            report, adata, VQA_ANNOTATIONS, "question_id", by_qid, report.unuse, "annotation_without_question")}
        if by_qid and not answers_by_qid:
            raise DataError(f"none of the {len(by_qid)} question ids of --questions {str(questions)!r} is in "
                            f"--annotations {str(annotations)!r}: not a pair (another split or data set?)")
        report.hints["missing_annotation"] = (f"question ids not in --annotations {str(annotations)!r}; "
                                              f"are both files from the same data set and split?")

    def make_sample(q: dict[str, Any]) -> Sample | Skip:
        qid = q["question_id"]
        if not q["question"].strip():
            return Skip("empty_question", f"question_id {qid}")
        problem = unicode_problem(q["question"])
        if problem:
            return Skip("invalid_unicode", f"question_id {qid}: the question has {problem}")
        meta: dict[str, Any] = {"question": q["question"].strip(), "question_id": qid, "image_id": q["image_id"]}
        if answers_by_qid is not None:
            if qid not in answers_by_qid:
                return Skip("missing_annotation", f"question_id {qid}")
            index, ann = answers_by_qid[qid]
            answers = _answers(ann, f"annotations[{index}]")
            if isinstance(answers, Skip):
                return answers
            for text in [*answers, *(ann[name] for name in ANNOTATION_FIELDS if isinstance(ann.get(name), str))]:
                problem = unicode_problem(text)
                if problem:
                    return Skip("invalid_unicode", f"question_id {qid}: an answer has {problem}")
            meta["answers"] = answers
            meta |= {name: ann[name] for name in ANNOTATION_FIELDS if name in ann}
        image = load_image(root, image_pattern.format(image_id=q["image_id"]), opts.verify)
        if isinstance(image, Skip):
            return image
        data, ext = image
        return make_key(prefix, qid), {ext: data, "json": json.dumps(meta)}

    items = take(report, sorted(by_qid.values(), key=lambda q: q["question_id"]), opts.limit)
    write_jobs(report, out_dir, [Job(f"{prefix}-{split}", items, make_sample)], opts)
    add_image_hint(report, root, "--images")
    return report


__all__ = ["convert_vqa"]
