"""COCO captions and Karpathy split files (frozen.prep.coco) in their public schemas: round trips
through the pipeline's reader, every record written or counted, data sets kept apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from public_files import accounted, coco_captions, eval_examples, karpathy_image, read_all, save_image, write_json

from frozen.errors import DataError
from frozen.prep.coco import convert_coco
from frozen.prep.convert import WriteOptions


@pytest.fixture
def official(tmp_path) -> tuple[Path, Path, dict[int, bytes]]:
    """``captions_val2014.json``: image 1 has 2 captions, image 2 one good and one blank, image 3 none,
    image 4 two but no file; one caption of an image not listed (99), one malformed caption."""
    root = tmp_path / "val2014"
    images = {i: save_image(root / f"COCO_val2014_{i:012d}.jpg", i) for i in (1, 2, 3)}
    captions = [(10, 1, "one a"), (11, 1, "one b"), (20, 2, "two a"), (21, 2, "  "), (40, 4, "four a"),
                (41, 4, "four b"), (990, 99, "orphan")]
    data = coco_captions([4, 3, 1, 2], captions)
    data["annotations"].append({"image_id": 1, "id": 12, "caption": 7})
    return write_json(tmp_path / "annotations" / "captions_val2014.json", data), root, images


def test_coco_official_per_pair_accounts_for_every_record(official, tmp_path):
    path, root, images = official
    report = convert_coco(path, root, tmp_path / "out", opts=WriteOptions(max_count=2))
    assert report.written() == 3 and report.skipped == {
        "empty_caption": 1, "image_without_captions": 1, "missing_image_file": 2, "caption_without_image": 1,
        "malformed_record": 1}
    assert accounted(report) == report.inputs == 8 + 1  # 8 captions + 1 image without any
    assert report.examples["missing_image_file"] == ["COCO_val2014_000000000004.jpg"]  # each example once
    assert report.examples["empty_caption"] == ["COCO_val2014_000000000002.jpg #21"]
    assert report.examples["malformed_record"] == ["annotations[7]: 'caption' is an integer, expected a string"]
    assert report.examples["caption_without_image"] == ["annotations[6] (image_id 99)"]
    assert report.patterns() == {"captions-val": "captions-val-{000000..000001}.tar"}  # split from the file name
    raw = read_all(tmp_path / "out", "captions-val")
    assert sorted(raw) == ["coco_000000000001_0000010", "coco_000000000001_0000011", "coco_000000000002_0000020"]
    assert raw["coco_000000000001_0000011"]["jpg"] == images[1]  # original bytes, not re-encoded
    assert json.loads(raw["coco_000000000002_0000020"]["json"]) == {
        "image_id": 2, "file_name": "COCO_val2014_000000000002.jpg", "split": "val", "caption_id": 20,
        "caption": "two a"}
    assert eval_examples(tmp_path / "out", "captions-val-*.tar")["coco_000000000001_0000010"].target == " one a"


def test_coco_official_per_image_and_limit(official, tmp_path):
    path, root, _ = official
    report = convert_coco(path, root, tmp_path / "out", per_image=True)
    assert report.written() == 2 and report.skipped == {
        "image_without_captions": 1, "missing_image_file": 1, "caption_without_image": 1, "malformed_record": 1}
    assert accounted(report) == 4 + 2  # 4 images + the orphan and the malformed caption
    examples = eval_examples(tmp_path / "out", "captions-val-000000.tar")
    assert examples["coco_000000000002"].meta["captions"] == ["two a"]  # the blank one dropped
    assert examples["coco_000000000001"].meta["caption_ids"] == [10, 11]
    # --limit 1: the first image (by id) with captions; the captions of the others are beyond the limit.
    limited = convert_coco(path, root, tmp_path / "lim", opts=WriteOptions(limit=1))
    assert limited.written() == 2 and limited.skipped["beyond_limit"] == 4  # images 2 and 4: 2 captions each
    assert accounted(limited) == 9 and limited.lost() == 3  # a limit is no loss; the data's problems still are


def karpathy_coco(tmp_path: Path) -> Path:
    images = []
    for i, split in enumerate(["train", "restval", "val", "test", "train"]):
        folder = "val2014" if split != "train" else "train2014"
        name = f"COCO_{folder}_{i:012d}.jpg"
        save_image(tmp_path / "coco" / folder / name, i)
        images.append(karpathy_image(i, split, name, 5, filepath=folder, cocoid=1000 + i))
    return write_json(tmp_path / "dataset_coco.json", {"images": images, "dataset": "coco"})


def test_karpathy_coco_splits_and_split_selection(tmp_path):
    path = karpathy_coco(tmp_path)
    out = tmp_path / "out"
    report = convert_coco(path, tmp_path / "coco", out, per_image=True)
    assert {p: report.written(p) for p in report.shards} == {"captions-train": 3, "captions-val": 1, "captions-test": 1}
    assert sorted(read_all(out, "captions-train")) == ["coco_000000001000", "coco_000000001001", "coco_000000001004"]
    test = eval_examples(out, "captions-test-000000.tar")["coco_000000001003"]
    assert test.meta["captions"] == [f"A picture 3 {j}." for j in range(5)] and test.meta["split"] == "test"
    # --images one level too deep (the split folder, while the file's filepath names it): the hint says so.
    deep = convert_coco(path, tmp_path / "coco" / "val2014", tmp_path / "deep", per_image=True)
    assert deep.written() == 0 and deep.skipped == {"missing_image_file": 5}
    assert deep.hints["missing_image_file"].endswith(f"exists: pass --images {str(tmp_path / 'coco')!r}")
    pairs = convert_coco(path, tmp_path / "coco", tmp_path / "pairs", split="val")
    assert pairs.written() == 5 and list(pairs.shards) == ["captions-val"]
    assert pairs.skipped == {"other_split": 20} and accounted(pairs) == 25 and pairs.failure(0.5) is None
    with pytest.raises(DataError) as exc:
        convert_coco(path, tmp_path / "coco", tmp_path / "x", split="validation")
    assert str(exc.value) == (f"--split 'validation' is not in --annotations {str(path)!r} "
                              "(its splits: test, train, val; restval is part of train)")
    assert not (tmp_path / "x").exists()  # nothing written


def test_karpathy_malformed_records_are_counted(tmp_path):
    images = [karpathy_image(0, "test", "a.jpg", 2), karpathy_image(1, "test", "b.jpg", 2),
              karpathy_image(2, "test", "c.jpg", 2)]
    images[1]["sentences"][1] = {"tokens": [], "imgid": 1, "sentid": 7}  # no 'raw'
    images[2]["imgid"] = "2"
    save_image(tmp_path / "imgs" / "a.jpg", 0)
    path = write_json(tmp_path / "dataset_flickr8k.json", {"images": images, "dataset": "flickr8k"})
    report = convert_coco(path, tmp_path / "imgs", tmp_path / "out", per_image=True)
    assert report.written() == 1 and report.skipped == {"malformed_record": 2} and accounted(report) == 3
    assert report.examples["malformed_record"] == ["images[1].sentences[1]: no 'raw'",
                                                   "images[2]: 'imgid' is a string, expected an integer"]


def test_flickr8k_into_a_coco_folder_leaves_coco_intact(tmp_path):
    out = tmp_path / "out"
    convert_coco(karpathy_coco(tmp_path), tmp_path / "coco", out, per_image=True)
    coco = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    # Flickr8k's Karpathy file: no filepath, no cocoid; its images sit in one folder.
    flickr = [karpathy_image(i, split, f"{1000 + i}_abc.jpg", 5) for i, split in enumerate(["train", "train", "test"])]
    for i in range(3):
        save_image(tmp_path / "Flicker8k_Dataset" / f"{1000 + i}_abc.jpg", 50 + i)
    path = write_json(tmp_path / "dataset_flickr8k.json", {"images": flickr, "dataset": "flickr8k"})
    report = convert_coco(path, tmp_path / "Flicker8k_Dataset", out, per_image=True)
    assert report.patterns() == {"flickr8k-captions-train": "flickr8k-captions-train-000000.tar",
                                 "flickr8k-captions-test": "flickr8k-captions-test-000000.tar"}
    assert sorted(read_all(out, "flickr8k-captions-train")) == ["flickr8k_000000000000", "flickr8k_000000000001"]
    assert {p.name: p.read_bytes() for p in out.glob("captions-*.tar")} == coco
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes == {"captions-test-000000.tar": 1, "captions-train-000000.tar": 3, "captions-val-000000.tar": 1,
                     "flickr8k-captions-test-000000.tar": 1, "flickr8k-captions-train-000000.tar": 2}
    # Same run again, or into COCO's prefix: refused before anything is written.
    for prefix in (None, "captions"):
        with pytest.raises(DataError, match="already holds .*pass --overwrite"):
            convert_coco(path, tmp_path / "Flicker8k_Dataset", out, per_image=True, prefix=prefix)
    assert {p.name: p.read_bytes() for p in out.glob("captions-*.tar")} == coco
    assert json.loads((out / "sizes.json").read_text()) == sizes


def test_coco_split_cannot_be_told(official, tmp_path):
    path, root, _ = official
    renamed = path.rename(path.with_name("my_captions.json"))
    with pytest.raises(DataError, match=r"cannot tell the split .* pass --split train\|val\|test"):
        convert_coco(renamed, root, tmp_path / "out")
    assert convert_coco(renamed, root, tmp_path / "out", split="val").written() == 3
