"""The input layer (frozen.prep.inputs): every bad input file is one DataError line naming the
file, the flag and the problem; malformed records are described, not raised."""

from __future__ import annotations

import json

import pytest
from public_files import coco_captions, karpathy_image, vqa_annotation, vqa_annotations, vqa_questions, write_json

from frozen.errors import DataError
from frozen.prep.inputs import (
    COCO_CAPTIONS,
    KARPATHY,
    VQA_ANNOTATIONS,
    VQA_QUESTIONS,
    load_json,
    read_table,
    record_problem,
)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_swapped_and_wrong_files_are_named_for_what_they_are(tmp_path):
    questions = write_json(tmp_path / "q.json", vqa_questions([(420, 42, "What?")]))
    annotations = write_json(tmp_path / "a.json", vqa_annotations([vqa_annotation(420, 42, ["red"] * 10)]))
    captions = write_json(tmp_path / "captions_val2014.json", coco_captions([42], [(1, 42, "a cat")]))
    karpathy = write_json(tmp_path / "dataset_coco.json",
                          {"images": [karpathy_image(0, "val", "x.jpg", 5, filepath="val2014", cocoid=0)],
                           "dataset": "coco"})
    with pytest.raises(DataError) as exc:
        load_json(annotations, VQA_QUESTIONS, "--questions")
    assert one_line(exc) == (f"--questions {str(annotations)!r} has no top-level 'questions'; it looks like a VQA "
                             "annotations file (like v2_mscoco_val2014_annotations.json): were two arguments swapped?")
    with pytest.raises(DataError, match="has no top-level 'annotations'; it looks like a VQA questions file"):
        load_json(questions, VQA_ANNOTATIONS, "--annotations")
    with pytest.raises(DataError, match="--questions .* it looks like a COCO captions file"):
        load_json(captions, VQA_QUESTIONS, "--questions")
    with pytest.raises(DataError, match="--annotations .* it looks like a Karpathy split file"):
        load_json(karpathy, VQA_ANNOTATIONS, "--annotations")
    unknown = write_json(tmp_path / "u.json", {"foo": 1})
    with pytest.raises(DataError, match="has no top-level 'questions'; expected a VQA questions file like v2_Open"):
        load_json(unknown, VQA_QUESTIONS, "--questions")
    assert load_json(questions, VQA_QUESTIONS, "--questions")["data_subtype"] == "val2014"
    assert load_json(captions, COCO_CAPTIONS, "--annotations")["annotations"][0]["caption"] == "a cat"
    assert load_json(karpathy, KARPATHY, "--annotations")["dataset"] == "coco"


def test_truncated_json_folder_missing_binary_and_wrong_types(tmp_path):
    full = json.dumps(vqa_questions([(420, 42, "What color is it?")]))
    (tmp_path / "cut.json").write_text(full[: len(full) // 2])
    with pytest.raises(DataError) as exc:
        load_json(tmp_path / "cut.json", VQA_QUESTIONS, "--questions")
    assert "is not valid JSON" in one_line(exc) and "truncated download" in str(exc.value)
    (tmp_path / "bad.json").write_text('{"questions": [}, "x": 1}')  # broken in the middle, not cut
    with pytest.raises(DataError) as exc:
        load_json(tmp_path / "bad.json", VQA_QUESTIONS, "--questions")
    assert "line 1 column 16" in one_line(exc) and "truncated download" not in str(exc.value)
    with pytest.raises(DataError, match=r"--questions '.*' is a folder; pass the VQA questions file itself"):
        load_json(tmp_path, VQA_QUESTIONS, "--questions")
    with pytest.raises(DataError, match=r"does not exist \(its folder exists\)"):
        load_json(tmp_path / "nope.json", VQA_QUESTIONS, "--questions")
    with pytest.raises(DataError, match=r"does not exist \(neither does its folder"):
        load_json(tmp_path / "no" / "nope.json", VQA_QUESTIONS, "--questions")
    (tmp_path / "img.json").write_bytes(b"\xff\xd8\xff\xe0JFIF\x00\x01")
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_json(tmp_path / "img.json", VQA_QUESTIONS, "--questions")
    write_json(tmp_path / "list.json", [1, 2])
    with pytest.raises(DataError, match="holds a JSON list, not the object of a VQA questions file"):
        load_json(tmp_path / "list.json", VQA_QUESTIONS, "--questions")
    write_json(tmp_path / "dict.json", {"questions": {"0": {}}})
    with pytest.raises(DataError, match="top-level 'questions' is an object, expected a list"):
        load_json(tmp_path / "dict.json", VQA_QUESTIONS, "--questions")
    write_json(tmp_path / "sub.json", {"questions": [], "data_subtype": 2014})
    with pytest.raises(DataError, match="top-level 'data_subtype' is an integer, expected a string"):
        load_json(tmp_path / "sub.json", VQA_QUESTIONS, "--questions")


def test_record_problem():
    fields = VQA_QUESTIONS.fields
    assert record_problem({"image_id": 1, "question": "q", "question_id": 2}, fields, "questions[0]") is None
    assert record_problem({"image_id": 1, "question": "q"}, fields, "questions[3]") == "questions[3]: no 'question_id'"
    assert record_problem({"image_id": 1, "question": "q", "question_id": "2"}, fields, "q[1]") == (
        "q[1]: 'question_id' is a string, expected an integer")
    assert record_problem({"image_id": True, "question": "q", "question_id": 2}, fields, "q[1]") == (
        "q[1]: 'image_id' is a boolean, expected an integer")
    assert record_problem(["x"], fields, "q[2]") == "q[2] is a list, expected an object"
    optional = {"cocoid": (int,)}
    assert record_problem({"a": 1, "cocoid": 1.5}, {"a": (int,)}, "i[0]", optional) == (
        "i[0]: 'cocoid' is a number, expected an integer")


def test_read_table_formats_headerless_and_malformed_rows(tmp_path):
    (tmp_path / "t.csv").write_text('\ufeffimage,caption\na.jpg,"one, with comma"\nb.jpg,two,extra\n\nc.jpg\n')
    table = read_table(tmp_path / "t.csv")
    assert table.columns == ["image", "caption"]  # the BOM of a spreadsheet export is not part of the name
    assert table.rows == [{"image": "a.jpg", "caption": "one, with comma"}, None, None]
    assert table.bad == {1: "line 3: 3 fields, header has 2", 2: "line 5: 1 fields, header has 2"}
    (tmp_path / "cc.tsv").write_text("a dog\thttp://x/1.jpg\na cat\thttp://x/2.jpg\n")
    headerless = read_table(tmp_path / "cc.tsv", columns=["caption", "url"])
    assert headerless.rows == [{"caption": "a dog", "url": "http://x/1.jpg"}, {"caption": "a cat", "url": "http://x/2.jpg"}]
    (tmp_path / "captions.txt").write_text("image,caption\nx.jpg,a caption .\n")  # Kaggle Flickr8k: CSV in .txt
    assert read_table(tmp_path / "captions.txt").rows == [{"image": "x.jpg", "caption": "a caption ."}]
    (tmp_path / "t.jsonl").write_text('{"image": "a.jpg", "caption": "x"}\n[1]\n{broken\n')
    jsonl = read_table(tmp_path / "t.jsonl")
    assert jsonl.rows[1:] == [None, None] and jsonl.bad[1] == "line 2: not a JSON object"
    assert jsonl.bad[2].startswith("line 3: not JSON")
    with pytest.raises(DataError, match="--columns names the columns of a headerless CSV/TSV; .* is JSONL"):
        read_table(tmp_path / "t.jsonl", columns=["image", "caption"])
    (tmp_path / "t.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"cannot tell the format from '\.xlsx'; pass --format csv\|tsv\|jsonl\|json"):
        read_table(tmp_path / "t.xlsx")
    write_json(tmp_path / "t.json", {"rows": []})
    with pytest.raises(DataError, match="holds a JSON object; expected a list of objects"):
        read_table(tmp_path / "t.json")
