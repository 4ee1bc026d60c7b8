"""Property tests of the converters' text fields: questions, answers and captions that are empty, huge,
unicode, control characters, ``<image>``-like or broken JSON escapes. Each record is written exactly
(stripped) or counted under a named reason; the run never raises."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from public_files import (
    accounted,
    coco_captions,
    read_all,
    save_image,
    vqa_annotation,
    vqa_annotations,
    vqa_questions,
    write_json,
)

from frozen.prep.coco import convert_coco
from frozen.prep.vqa import convert_vqa

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None)  # reproducible; no example database
# A lone surrogate reaches Python through a JSON "\ud800" escape (json.dumps writes one for it).
PIECES = ["<image>", "<image", "<|endoftext|>", "\x00", "\x1b[31m", "\n", "\r\t", "\u200b", "e\u0301", "\U0001f642",
          " ", "{question}", "a" * 2000, "\ud800", "\udfff"]
texts = st.lists(st.one_of(st.text(max_size=10), st.sampled_from(PIECES)), max_size=5).map("".join)


def _as_read(text: str) -> str:
    """``text`` as the converter reads it back from a JSON file: an escaped surrogate pair joins into one."""
    return json.loads(json.dumps(text))


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    save_image(root / "val2014" / "COCO_val2014_000000000042.jpg", 42)
    return root / "val2014"


@FUZZ
@given(items=st.lists(st.tuples(texts, st.lists(texts, min_size=1, max_size=3)), min_size=1, max_size=4))
def test_vqa_text_is_written_exactly_or_counted(images, items):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        q = write_json(tmp / "v2_OpenEnded_mscoco_val2014_questions.json",
                       vqa_questions([(1000 + i, 42, question) for i, (question, _) in enumerate(items)]))
        a = write_json(tmp / "v2_mscoco_val2014_annotations.json", vqa_annotations(
            [vqa_annotation(1000 + i, 42, answers) for i, (_, answers) in enumerate(items)]))
        report = convert_vqa(q, a, images, tmp / "out")
        assert accounted(report) == report.inputs == len(items) and not report.unused
        written = {json.loads(s["json"])["question_id"]: json.loads(s["json"])
                   for s in read_all(tmp / "out", "vqa-val").values()} if report.written() else {}
    for i, (question, answers) in enumerate(items):
        question, answers = _as_read(question), [_as_read(a) for a in answers]
        if not question.strip():
            assert 1000 + i not in written
        elif not _valid(question) or not all(map(_valid, answers)):
            assert 1000 + i not in written and report.skipped["invalid_unicode"]
        else:
            assert written[1000 + i]["question"] == question.strip() and written[1000 + i]["answers"] == answers
    assert set(report.skipped) <= {"empty_question", "invalid_unicode"}


@FUZZ
@given(captions=st.lists(texts, min_size=1, max_size=4), per_image=st.booleans())
def test_coco_captions_are_written_exactly_or_counted(images, captions, per_image):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = write_json(tmp / "captions_val2014.json",
                          coco_captions([42], [(10 + i, 42, c) for i, c in enumerate(captions)]))
        report = convert_coco(path, images, tmp / "out", per_image=per_image)
        assert accounted(report) == report.inputs == (1 if per_image else len(captions))
        raw = read_all(tmp / "out", "captions-val") if report.written() else {}
    captions = [_as_read(c) for c in captions]
    kept = [c.strip() for c in captions if c.strip()]
    if per_image:
        if kept and all(map(_valid, kept)):
            assert [json.loads(s["json"])["captions"] for s in raw.values()] == [kept]
        else:
            assert not raw and set(report.skipped) <= {"empty_caption", "invalid_unicode"}
        return
    expected = [c.strip() for c in captions if c.strip() and _valid(c)]
    assert sorted(s["txt"].decode("utf-8") for s in raw.values()) == sorted(expected)
    assert report.skipped["empty_caption"] == sum(not c.strip() for c in captions)
    assert report.skipped["invalid_unicode"] == sum(bool(c.strip()) and not _valid(c) for c in captions)


def test_example_found_by_fuzzing(images, tmp_path):
    """A caption with a broken surrogate escape crashed the shard writer with a UnicodeEncodeError."""
    path = write_json(tmp_path / "captions_val2014.json", coco_captions([42], [(10, 42, "ok"), (11, 42, "a\ud800")]))
    report = convert_coco(path, images, tmp_path / "out")
    assert report.written() == 1 and report.skipped == {"invalid_unicode": 1}
    assert report.examples["invalid_unicode"] == ["COCO_val2014_000000000042.jpg #11: caption 11 has a lone "
                                                  "surrogate '\\ud800' at character 1"]
