"""Converters and shard writing (frozen.prep.shards, frozen.prep.convert, frozen.prep.easyvqa, the CLI):
every converter round-trips through the pipeline's reader on small inputs written here."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frozen.prep.convert import WriteOptions, convert_captions, convert_coco, convert_vqa
from frozen.config import DataConfig
from frozen.data.pipeline import iter_eval_samples
from frozen.prep.easyvqa import COLORS, SHAPES, convert_easyvqa, derive_caption
from frozen.errors import DataError
from frozen.data.samples import iter_shard
from frozen.prep.shards import ShardSink, make_key

REPO = Path(__file__).resolve().parents[2]


def save_image(path: Path, seed: int, fmt: str = "JPEG") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)).save(path, fmt)
    return path.read_bytes()


def read_all(out: Path, prefix: str) -> dict[str, dict[str, bytes]]:
    """Raw samples of all ``prefix`` shards, checking sizes.json and key hygiene on the way."""
    sizes = json.loads((out / "sizes.json").read_text())
    samples: dict[str, dict[str, bytes]] = {}
    for name in sorted(n for n in sizes if n.startswith(prefix + "-")):
        counts: Counter = Counter()
        got = list(iter_shard(str(out / name), counts))
        assert not counts and len(got) == sizes[name]  # sizes.json counts what is in the tar
        for key, files in got:
            assert "." not in key and key not in samples  # tar-safe and unique
            samples[key] = files
    return samples


def eval_examples(out: Path, pattern: str) -> dict[str, object]:
    cfg = DataConfig(train_shards="", data_root=str(out))
    return {e.key: e for e in iter_eval_samples(pattern, image_size=8, cfg=cfg)}


# ---------------------------------------------------------------------------------- ShardSink


def test_make_key_is_tar_safe():
    assert make_key("coco", "000000000042", 7) == "coco_000000000042_7"
    assert make_key("a.b/c d", 1.5) == "a-b-c-d_1-5"


def test_sink_rotates_by_count_and_size_and_is_reproducible(tmp_path):
    payload = {"txt": "x" * 100, "bin": b"\0" * 1000}  # 512 + 512 + 512 + 1024 = 2560 tar bytes

    def write(out: Path, **limits) -> dict[str, int]:
        with ShardSink(out, "s", **limits) as sink:
            for i in range(7):
                sink.write(f"k{i}", payload)
        return json.loads((out / "sizes.json").read_text())

    assert list(write(tmp_path / "a", max_count=3).values()) == [3, 3, 1]
    assert list(write(tmp_path / "b", max_size=2560 * 2).values()) == [2, 2, 2, 1]
    assert list(write(tmp_path / "c", max_size=10).values()) == [1] * 7  # oversized: one sample each
    write(tmp_path / "d", max_count=3)
    assert (tmp_path / "a" / "s-000000.tar").read_bytes() == (tmp_path / "d" / "s-000000.tar").read_bytes()
    # A smaller re-run removes the stale shard and its sizes.json entry; other prefixes stay.
    with ShardSink(tmp_path / "a", "other") as sink:
        sink.write("o", payload)
    write(tmp_path / "a", max_count=5)
    names = sorted(p.name for p in (tmp_path / "a").glob("*.tar"))
    assert names == ["other-000000.tar", "s-000000.tar", "s-000001.tar"]
    assert json.loads((tmp_path / "a" / "sizes.json").read_text()) == {
        "other-000000.tar": 1, "s-000000.tar": 5, "s-000001.tar": 2}


def test_sink_rejects_bad_and_duplicate_keys(tmp_path):
    with ShardSink(tmp_path, "s") as sink:
        with pytest.raises(ValueError, match="must not contain"):
            sink.write("a.b", {"txt": "x"})
        sink.write("a", {"txt": "x"})
        with pytest.raises(ValueError, match="duplicate"):
            sink.write("a", {"txt": "y"})


# --------------------------------------------------------------------------------------- COCO


@pytest.fixture
def coco_json(tmp_path) -> tuple[Path, Path, dict[int, bytes]]:
    """Official-format captions_train2017.json: 3 images x 2 captions, one image file missing,
    one empty caption."""
    root = tmp_path / "train2017"
    images = {i: save_image(root / f"{i:012d}.jpg", i) for i in (1, 2)}  # image 3's file is missing
    anns = [{"image_id": i, "id": 10 * i + j, "caption": f"image {i} caption {j}"} for i in (1, 2, 3) for j in (0, 1)]
    anns[1]["caption"] = "  "
    data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (3, 1, 2)], "annotations": anns}
    path = tmp_path / "annotations" / "captions_train2017.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    return path, root, images


def test_coco_per_pair_round_trip(coco_json, tmp_path):
    path, root, images = coco_json
    report = convert_coco(path, root, tmp_path / "out", opts=WriteOptions(max_count=2))
    assert report.written() == 3 and report.skipped == {"empty_caption": 1, "missing_image_file": 2}
    assert report.patterns() == {"captions-train": "captions-train-{000000..000001}.tar"}
    raw = read_all(tmp_path / "out", "captions-train")
    assert sorted(raw) == ["coco_000000000001_0000010", "coco_000000000002_0000020", "coco_000000000002_0000021"]
    assert raw["coco_000000000002_0000021"]["jpg"] == images[2]  # original bytes, not re-encoded
    assert raw["coco_000000000002_0000021"]["txt"] == b"image 2 caption 1"
    meta = json.loads(raw["coco_000000000001_0000010"]["json"])
    assert meta == {"image_id": 1, "file_name": "000000000001.jpg", "split": "train", "caption_id": 10,
                    "caption": "image 1 caption 0"}
    examples = eval_examples(tmp_path / "out", "captions-train-{000000..000001}.tar")
    assert examples["coco_000000000002_0000020"].target == " image 2 caption 0"


def test_coco_per_image_round_trip(coco_json, tmp_path):
    path, root, _ = coco_json
    report = convert_coco(path, root, tmp_path / "out", per_image=True)
    assert report.written() == 2 and report.skipped == {"missing_image_file": 1}
    examples = eval_examples(tmp_path / "out", "captions-train-000000.tar")
    assert examples["coco_000000000001"].meta["captions"] == ["image 1 caption 0"]  # empty one dropped
    assert examples["coco_000000000002"].meta["captions"] == ["image 2 caption 0", "image 2 caption 1"]
    assert examples["coco_000000000002"].target == " image 2 caption 0"  # eval: the first caption


def test_coco_karpathy_splits(tmp_path):
    splits = ["train", "restval", "val", "test", "train"]
    images = []
    for i, split in enumerate(splits):
        folder = "val2014" if split != "train" else "train2014"
        save_image(tmp_path / "coco" / folder / f"COCO_{folder}_{i:012d}.jpg", i)
        images.append({"filepath": folder, "filename": f"COCO_{folder}_{i:012d}.jpg", "split": split, "cocoid": i,
                       "sentences": [{"raw": f"karpathy {i} {j}", "sentid": 5 * i + j} for j in range(5)]})
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    out = tmp_path / "out"
    report = convert_coco(path, tmp_path / "coco", out, per_image=True)
    assert {p: report.written(p) for p in report.shards} == {"captions-train": 3, "captions-val": 1, "captions-test": 1}
    assert sorted(read_all(out, "captions-train")) == ["coco_000000000000", "coco_000000000001", "coco_000000000004"]
    test = eval_examples(out, "captions-test-000000.tar")["coco_000000000003"]
    assert test.meta["captions"] == [f"karpathy 3 {j}" for j in range(5)] and test.meta["split"] == "test"
    pairs = convert_coco(path, tmp_path / "coco", tmp_path / "pairs", split="val")
    assert pairs.written() == 5 and list(pairs.shards) == ["captions-val"]


# --------------------------------------------------------------------------------------- VQA


def test_vqav2_round_trip_and_test_split_without_answers(tmp_path):
    for image_id in (42, 73):
        save_image(tmp_path / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", image_id)
    questions = [{"image_id": 42, "question": "What color?", "question_id": 42000},
                 {"image_id": 73, "question": "How many?", "question_id": 73001},
                 {"image_id": 99, "question": "Missing image?", "question_id": 99000}]
    (tmp_path / "q.json").write_text(json.dumps({"data_subtype": "val2014", "questions": questions}))
    answers = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
               for i, a in enumerate(["red"] * 6 + ["blue"] * 4)]
    anns = [{"question_id": 42000, "image_id": 42, "answers": answers, "multiple_choice_answer": "red",
             "answer_type": "other", "question_type": "what color"},
            {"question_id": 73001, "image_id": 73, "answers": [{"answer": "2"}] * 10, "answer_type": "number"},
            {"question_id": 99000, "image_id": 99, "answers": [{"answer": "x"}] * 10, "answer_type": "other"}]
    (tmp_path / "a.json").write_text(json.dumps({"annotations": anns}))
    report = convert_vqa(tmp_path / "q.json", tmp_path / "a.json", tmp_path / "val2014", tmp_path / "out")
    assert report.written("vqa-val") == 2 and report.skipped == {"missing_image_file": 1}
    raw = read_all(tmp_path / "out", "vqa-val")
    assert json.loads(raw["vqa_42000"]["json"]) == {
        "question": "What color?", "question_id": 42000, "image_id": 42, "answers": ["red"] * 6 + ["blue"] * 4,
        "multiple_choice_answer": "red", "answer_type": "other", "question_type": "what color"}
    examples = eval_examples(tmp_path / "out", "vqa-val-000000.tar")
    assert (examples["vqa_42000"].prompt, examples["vqa_42000"].target) == (" Q: What color? A:", " red")
    assert examples["vqa_73001"].target == " 2"  # no multiple_choice_answer (OK-VQA): most common
    # Without annotations (test splits): questions only; eval keeps them with an empty target.
    convert_vqa(tmp_path / "q.json", None, tmp_path / "val2014", tmp_path / "noans", split="test")
    examples = eval_examples(tmp_path / "noans", "vqa-test-000000.tar")
    assert examples["vqa_42000"].target == "" and "answers" not in examples["vqa_42000"].meta


# ----------------------------------------------------------------------------- caption tables


def test_captions_csv_and_jsonl_round_trip(tmp_path):
    data = tmp_path / "mine"
    save_image(data / "imgs" / "a.jpg", 1)
    save_image(data / "imgs" / "b.png", 2, "PNG")
    save_image(tmp_path / "abs.jpg", 3)
    rows = ['imgs/a.jpg,"a photo, of a"', "imgs/b.png,a png", "imgs/missing.jpg,gone",
            f"{tmp_path / 'abs.jpg'},absolute", "imgs/a.jpg,"]
    (data / "caps.csv").write_text("file_name,text\n" + "\n".join(rows) + "\n")
    report = convert_captions(data / "caps.csv", tmp_path / "out")
    assert report.written() == 3 and report.skipped == {"missing_image_file": 1, "empty_caption": 1}
    raw = read_all(tmp_path / "out", "captions-train")
    assert raw["train_000000001"]["png"][:4] == b"\x89PNG" and raw["train_000000000"]["txt"] == b"a photo, of a"
    examples = eval_examples(tmp_path / "out", "captions-train-000000.tar")
    assert examples["train_000000003"].target == " absolute"
    # JSONL with the default image/caption columns, and explicit column flags.
    lines = ['{"image": "imgs/a.jpg", "caption": "first"}', "", '{"image": "imgs/b.png", "caption": "second"}']
    (data / "caps.jsonl").write_text("\n".join(lines) + "\n")
    assert convert_captions(data / "caps.jsonl", tmp_path / "j", split="val").written("captions-val") == 2
    (data / "odd.jsonl").write_text('{"pic": "imgs/a.jpg", "desc": "custom"}\n')
    with pytest.raises(DataError, match="--image-column"):
        convert_captions(data / "odd.jsonl", tmp_path / "o")
    report = convert_captions(data / "odd.jsonl", tmp_path / "o", image_column="pic", caption_column="desc")
    assert eval_examples(tmp_path / "o", "captions-train-000000.tar")["train_000000000"].target == " custom"


# ----------------------------------------------------------------------------------- easy-VQA


def test_derive_caption():
    assert derive_caption([("what is the blue shape?", "rectangle")]) == ("blue", "rectangle")
    assert derive_caption([("what color is the triangle?", "red")]) == ("red", "triangle")
    negated = [("is there not a teal shape?", "no"), ("what shape is present?", "circle")]
    assert derive_caption(negated) == ("teal", "circle")
    eliminate = [("is there a circle?", "no"), ("is a rectangle present?", "no"), ("what color is the shape?", "gray")]
    assert derive_caption(eliminate) == ("gray", "triangle")
    assert derive_caption([("what color is the shape?", "gray")]) is None  # no shape evidence
    assert derive_caption([("what color is the circle?", "red"), ("what is the blue shape?", "circle")]) is None


def test_easyvqa_round_trip(tmp_path):
    import easy_vqa

    report = convert_easyvqa(tmp_path, opts=WriteOptions(max_count=50, limit=20))
    texts, answers, image_ids = easy_vqa.get_train_questions()
    n_questions = sum(i < 20 for i in image_ids)
    assert report.written("vqa-train") == n_questions and report.written("captions-test") <= 20
    assert report.written("captions-train") + report.skipped["caption_underivable"] >= 20
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


# ------------------------------------------------------------------------------------------ CLI


def load_cli():
    spec = importlib.util.spec_from_file_location("make_shards", REPO / "scripts" / "make_shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_easyvqa_and_errors(tmp_path, capsys):
    cli = load_cli()
    assert cli.parse_size("500M") == 500_000_000 and cli.parse_size("2k") == 2000 and cli.parse_size("77") == 77
    out = tmp_path / "e"
    assert cli.main(["easyvqa", "--out", str(out), "--limit", "5", "--splits", "test", "--max-size", "1M"]) == 0
    printed = capsys.readouterr().out
    assert "vqa-test" in printed and "written" in printed
    assert sorted(json.loads((out / "sizes.json").read_text())) == ["captions-test-000000.tar", "vqa-test-000000.tar"]
    assert cli.main(["captions", "--table", str(tmp_path / "nope.csv"), "--out", str(out)]) == 1
    assert "not found" in capsys.readouterr().out
