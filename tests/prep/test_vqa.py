"""VQAv2 / OK-VQA questions + annotations (frozen.prep.vqa) in their public schemas: round trip,
every record written or counted, and each wrong pairing named before any work."""

from __future__ import annotations

import json

import pytest
from public_files import (
    accounted,
    eval_examples,
    read_all,
    save_image,
    vqa_annotation,
    vqa_annotations,
    vqa_questions,
    write_json,
)

from frozen.errors import DataError
from frozen.prep.vqa import convert_vqa

RED = ["red"] * 6 + ["blue"] * 4


@pytest.fixture
def vqa(tmp_path):
    for image_id in (42, 73, 55):
        save_image(tmp_path / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", image_id)
    questions = vqa_questions([(42000, 42, "What color?"), (73001, 73, "How many?"), (99000, 99, "Missing image?"),
                               (55000, 55, "No annotation?"), (56000, 55, "   "), (42000, 42, "Twice?")])
    questions["questions"].append({"image_id": 42, "question": "Bad id?", "question_id": "42001"})
    anns = [vqa_annotation(42000, 42, RED, question_type="what color"),
            vqa_annotation(73001, 73, ["2"] * 10, answer_type="number", question_type="how many"),
            vqa_annotation(99000, 99, ["x"] * 10), vqa_annotation(56000, 55, ["y"] * 10),
            vqa_annotation(12345, 12, ["z"] * 10)]
    del anns[1]["multiple_choice_answer"]  # as in OK-VQA, whose annotations may lack it
    bad = vqa_annotation(55000, 55, ["a"] * 10)
    bad["answers"][3] = {"answer_id": 4}
    q = write_json(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json", questions)
    a = write_json(tmp_path / "v2_mscoco_val2014_annotations.json", vqa_annotations([*anns, bad]))
    return q, a, tmp_path / "val2014"


def test_vqav2_round_trip_and_accounting(vqa, tmp_path):
    q, a, images = vqa
    report = convert_vqa(q, a, images, tmp_path / "out")
    assert report.written("vqa-val") == 2 and report.skipped == {
        "missing_image_file": 1, "empty_question": 1, "malformed_record": 2, "duplicate_record": 1}
    assert report.unused == {"annotation_without_question": 1}  # question 12345 is not in this questions file
    assert accounted(report) == report.inputs == 7  # the 7 question records; the unused annotation is no input
    assert report.summary() == ("written 2; skipped 5 (duplicate_record: 1, empty_question: 1, malformed_record: 2, "
                                "missing_image_file: 1); unused 1 (annotation_without_question: 1)")
    assert report.examples["malformed_record"] == ["questions[6]: 'question_id' is a string, expected an integer",
                                                   "annotations[5].answers[3]: no 'answer' string"]
    assert report.examples["missing_image_file"] == ["COCO_val2014_000000000099.jpg"]
    raw = read_all(tmp_path / "out", "vqa-val")
    assert json.loads(raw["vqa_42000"]["json"]) == {
        "question": "What color?", "question_id": 42000, "image_id": 42, "answers": RED,
        "multiple_choice_answer": "red", "answer_type": "other", "question_type": "what color"}
    examples = eval_examples(tmp_path / "out", "vqa-val-000000.tar")
    assert (examples["vqa_42000"].prompt, examples["vqa_42000"].target) == (" Q: What color? A:", " red")
    assert examples["vqa_73001"].target == " 2"  # no multiple_choice_answer: the most common answer


def test_test_split_without_annotations_and_okvqa_prefix(vqa, tmp_path):
    q, _, images = vqa
    data = json.loads(q.read_text())
    data["data_subtype"] = "test-dev2015"
    testdev = write_json(tmp_path / "v2_OpenEnded_mscoco_test-dev2015_questions.json", data)
    save_image(tmp_path / "test2015" / "COCO_test2015_000000000042.jpg", 1)
    report = convert_vqa(testdev, None, tmp_path / "test2015", tmp_path / "out")
    assert list(report.shards) == ["vqa-testdev"] and report.written() == 1  # test-dev images live in test2015
    assert "answers" not in json.loads(read_all(tmp_path / "out", "vqa-testdev")["vqa_42000"]["json"])
    convert_vqa(q, None, images, tmp_path / "out", prefix="okvqa")
    assert sorted(read_all(tmp_path / "out", "okvqa-val")) == ["okvqa_42000", "okvqa_55000", "okvqa_73001"]


def test_wrong_pairs_fail_before_any_work(vqa, tmp_path):
    q, a, images = vqa
    out = tmp_path / "out"
    with pytest.raises(DataError, match="--questions .* it looks like a VQA annotations file.*swapped"):
        convert_vqa(a, q, images, out)
    train = write_json(tmp_path / "v2_mscoco_train2014_annotations.json",
                       vqa_annotations([vqa_annotation(42000, 42, RED)], subtype="train2014"))
    with pytest.raises(DataError) as exc:
        convert_vqa(q, train, images, out)
    assert str(exc.value) == (f"--questions {str(q)!r} is val2014 but --annotations {str(train)!r} is train2014; "
                              "pass the annotations of the same split")
    other = write_json(tmp_path / "mscoco_val2014_annotations.json", vqa_annotations([vqa_annotation(1, 1, RED)]))
    with pytest.raises(DataError, match=r"none of the 5 question ids .* is in --annotations .*: not a pair"):
        convert_vqa(q, other, images, out)
    assert not out.exists()


def test_missing_data_subtype_asks_for_everything_at_once(vqa, tmp_path):
    q, a, images = vqa
    data = json.loads(q.read_text())
    del data["data_subtype"]
    bare = write_json(tmp_path / "questions.json", data)
    with pytest.raises(DataError) as exc:
        convert_vqa(bare, None, images, tmp_path / "out")
    assert str(exc.value) == (f"--questions {str(bare)!r} has no data_subtype to derive them from: pass --split "
                              "train|val|test and --image-pattern 'COCO_val2014_{image_id:012d}.jpg'")
    named = write_json(tmp_path / "OpenEnded_mscoco_val2014_questions.json", data)  # the name gives the split
    with pytest.raises(DataError, match=r"pass --image-pattern 'COCO_val2014_\{image_id:012d\}\.jpg'$"):
        convert_vqa(named, None, images, tmp_path / "out")
    with pytest.raises(DataError, match=r"--image-pattern 'COCO_\{id\}\.jpg' is not a format string"):
        convert_vqa(bare, None, images, tmp_path / "out", split="val", image_pattern="COCO_{id}.jpg")
    report = convert_vqa(bare, None, images, tmp_path / "out", split="val",
                         image_pattern="COCO_val2014_{image_id:012d}.jpg")
    assert report.written("vqa-val") == 3


def test_a_subset_of_the_questions_leaves_annotations_unused_and_succeeds(tmp_path):
    """Thousands of questions against the full annotation file: the rest of the annotations are unused."""
    for image_id in range(10):
        save_image(tmp_path / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", image_id)
    anns = [vqa_annotation(1000 + i, i % 10, RED) for i in range(40)]
    a = write_json(tmp_path / "v2_mscoco_val2014_annotations.json", vqa_annotations(anns))
    subset = [(1000 + i, i % 10, f"Question {i}?") for i in (3, 17, 25)]
    q = write_json(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json", vqa_questions(subset))
    report = convert_vqa(q, a, tmp_path / "val2014", tmp_path / "out")
    assert report.written() == report.inputs == 3 and not report.skipped and report.lost() == 0
    assert report.unused == {"annotation_without_question": 37}
    assert report.failure(max_skip_fraction=0.0) is None
    assert sorted(read_all(tmp_path / "out", "vqa-val")) == ["vqa_1003", "vqa_1017", "vqa_1025"]
    # records lost for real reasons still count, and still fail the run when most are lost
    missing = [(2000 + i, 50 + i, f"Question {i}?") for i in (4, 5)]  # no image files for 54, 55
    q2 = write_json(tmp_path / "more" / "v2_OpenEnded_mscoco_val2014_questions.json",
                    vqa_questions(subset[:1] + missing))
    anns += [vqa_annotation(2000 + i, 50 + i, RED) for i in (4, 5)]
    a2 = write_json(tmp_path / "more" / "v2_mscoco_val2014_annotations.json", vqa_annotations(anns))
    report = convert_vqa(q2, a2, tmp_path / "val2014", tmp_path / "out2")
    assert report.written() == 1 and report.skipped == {"missing_image_file": 2}
    assert report.unused == {"annotation_without_question": 42 - 3}
    assert report.failure(max_skip_fraction=0.5).startswith("skipped 2 of 3 records (67%)")
