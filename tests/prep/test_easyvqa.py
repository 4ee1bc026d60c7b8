"""easy-VQA (frozen.prep.easyvqa): derived captions, VQA samples and their accounting."""

from __future__ import annotations

import json
import re

from public_files import accounted, eval_examples, read_all

from frozen.prep.convert import WriteOptions
from frozen.prep.easyvqa import COLORS, SHAPES, convert_easyvqa, derive_caption


def test_derive_caption():
    assert derive_caption([("what is the blue shape?", "rectangle")]) == ("blue", "rectangle")
    assert derive_caption([("what color is the triangle?", "red")]) == ("red", "triangle")
    negated = [("is there not a teal shape?", "no"), ("what shape is present?", "circle")]
    assert derive_caption(negated) == ("teal", "circle")
    eliminate = [("is there a circle?", "no"), ("is a rectangle present?", "no"), ("what color is the shape?", "gray")]
    assert derive_caption(eliminate) == ("gray", "triangle")
    assert derive_caption([("what color is the shape?", "gray")]) is None  # no shape evidence
    assert derive_caption([("what color is the circle?", "red"), ("what is the blue shape?", "circle")]) is None


def test_easyvqa_round_trip_and_accounting(tmp_path):
    import easy_vqa

    report = convert_easyvqa(tmp_path, opts=WriteOptions(max_count=50, limit=20))
    texts, answers, image_ids = easy_vqa.get_train_questions()
    test_texts, _, test_ids = easy_vqa.get_test_questions()
    n_images = len(easy_vqa.get_train_image_paths()) + len(easy_vqa.get_test_image_paths())
    n_questions = sum(i < 20 for i in image_ids)
    assert report.written("vqa-train") == n_questions and report.written("captions-test") <= 20
    captioned = report.written("captions-train") + report.written("captions-test")
    assert captioned + report.skipped["caption_underivable"] == 40
    assert accounted(report) == n_images + len(texts) + len(test_texts)  # every image and question
    assert report.skipped["beyond_limit"] == n_images - 40 + sum(i >= 20 for i in image_ids + test_ids)
    captions = read_all(tmp_path, "captions-train")
    for key, files in captions.items():
        meta = json.loads(files["json"])
        assert files["txt"].decode() == f"a {meta['color']} {meta['shape']}"
        assert meta["color"] in COLORS and meta["shape"] in SHAPES
        for q, a, i in zip(texts, answers, image_ids):  # the caption agrees with every what-question
            if i == meta["image_id"] and q == "what color is the shape?":
                assert a == meta["color"]
            if i == meta["image_id"] and re.fullmatch(r"what is the \w+ shape\?", q):
                assert a == meta["shape"]
    vqa = read_all(tmp_path, "vqa-train")
    assert len(vqa) == n_questions
    for files in vqa.values():
        meta = json.loads(files["json"])
        qid = meta["question_id"]
        assert (meta["question"], meta["image_id"]) == (texts[qid], image_ids[qid])
        assert meta["answers"] == [answers[qid]] * 10 and meta["multiple_choice_answer"] == answers[qid]
        yes_no = answers[qid] in ("yes", "no")
        assert meta["answer_type"] == ("yes/no" if yes_no else "other")
        assert meta["question_type"] == ("yes/no" if yes_no else "color" if answers[qid] in COLORS else "shape")
        assert files["png"][:4] == b"\x89PNG"
    examples = eval_examples(tmp_path, "vqa-test-000000.tar::captions-test-000000.tar")
    assert {e.kind for e in examples.values()} == {"vqa", "caption"}
    prefixed = convert_easyvqa(tmp_path, splits=["test"], prefix="ez", opts=WriteOptions(limit=3))
    assert list(prefixed.shards) == ["ez-captions-test", "ez-vqa-test"]  # next to the unprefixed ones
