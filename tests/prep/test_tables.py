"""Caption tables (frozen.prep.tables): Kaggle's Flickr8k captions.txt, the headerless Conceptual
Captions TSV, CSV/JSONL round trips, every row written or counted."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from public_files import accounted, conceptual_captions_tsv, eval_examples, kaggle_flickr8k, read_all, save_image

from frozen.errors import DataError
from frozen.prep.convert import WriteOptions
from frozen.prep.tables import convert_captions

REPO = Path(__file__).resolve().parents[2]
CC_ROWS = [("a very typical bus station", "http://lh6.ggpht.com/x/bus.jpg"),
           ("sierra looked stunning in this top", "https://i.pinimg.com/736x/top.jpg")]


def test_kaggle_flickr8k_captions_txt(tmp_path):
    table = kaggle_flickr8k(tmp_path / "flickr8k", {"1000268201_693b08cb0e.jpg": 1, "1001773457_577c3a7d70.jpg": 2})
    # The images are in Images/, not next to captions.txt: nothing found, and the hint says where they are.
    lost = convert_captions(table, tmp_path / "out", prefix="flickr8k")
    assert lost.written() == 0 and lost.skipped == {"missing_image_file": 10}
    images = tmp_path / "flickr8k" / "Images"
    assert lost.hints["missing_image_file"].endswith(f"exists: pass --image-root {str(images)!r}")
    assert lost.failure(0.5) == "wrote nothing: 10 of 10 records skipped"
    report = convert_captions(table, tmp_path / "out2", prefix="flickr8k", image_root=images)
    assert report.written("flickr8k-train") == 10 and accounted(report) == 10
    raw = read_all(tmp_path / "out2", "flickr8k-train")
    assert raw["flickr8k_train_000000000"]["txt"] == b"A dog, number 1, runs 0 ."  # quoted comma kept
    assert raw["flickr8k_train_000000006"]["txt"] == b"A dog runs 1 ."


def test_headerless_conceptual_captions_tsv(tmp_path):
    tsv = conceptual_captions_tsv(tmp_path / "cc3m.tsv", CC_ROWS)
    with pytest.raises(DataError) as exc:  # read as if it had a header: the first row becomes the column names
        convert_captions(tsv, tmp_path / "out")
    assert "first row looks like data, not a header" in str(exc.value) and "--columns caption,url" in str(exc.value)
    report = convert_captions(tsv, tmp_path / "out", columns=["caption", "url"], image_column="url")
    assert report.written() == 0 and report.skipped == {"image_is_url": 2}
    assert report.examples["image_is_url"][0] == "http://lh6.ggpht.com/x/bus.jpg"
    assert "download the images with img2dataset" in report.hints["image_is_url"]


def test_docs_header_step_makes_the_cc3m_tsv_readable_by_column_name(tmp_path):
    """docs/data.md's `sed` step (img2dataset's own) gives the TSV the header img2dataset's
    --url_col url --caption_col caption look for, and keeps every row."""
    docs = (REPO / "docs" / "data.md").read_text()
    step = re.search(r"^sed -i '1s/\^/caption\\turl\\n/' cc3m\.tsv$", docs, re.MULTILINE)
    assert step is not None and "img2dataset --url_list cc3m.tsv" in docs
    if shutil.which("sed") is None:
        pytest.skip("no sed on this machine")
    conceptual_captions_tsv(tmp_path / "cc3m.tsv", CC_ROWS)
    subprocess.run(step.group(0), shell=True, cwd=tmp_path, check=True)
    with open(tmp_path / "cc3m.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [(r["caption"], r["url"]) for r in rows] == CC_ROWS


def test_csv_and_jsonl_round_trip_and_accounting(tmp_path):
    data = tmp_path / "mine"
    save_image(data / "imgs" / "a.jpg", 1)
    save_image(data / "imgs" / "b.png", 2, "PNG")
    save_image(tmp_path / "abs.jpg", 3)
    rows = ['imgs/a.jpg,"a photo, of a"', "imgs/b.png,a png", "imgs/missing.jpg,gone",
            f"{tmp_path / 'abs.jpg'},absolute", "imgs/a.jpg,", "imgs/a.jpg,too,many", "imgs/b.png,limited"]
    (data / "caps.csv").write_text("file_name,text\n" + "\n".join(rows) + "\n")
    report = convert_captions(data / "caps.csv", tmp_path / "out", opts=WriteOptions(limit=6))
    assert report.written() == 3 and report.skipped == {
        "missing_image_file": 1, "empty_caption": 1, "malformed_row": 1, "beyond_limit": 1}
    assert accounted(report) == len(rows)
    assert report.examples["malformed_row"] == ["line 7: 3 fields, header has 2"]
    raw = read_all(tmp_path / "out", "captions-train")
    assert raw["captions_train_000000001"]["png"][:4] == b"\x89PNG"
    assert raw["captions_train_000000000"]["txt"] == b"a photo, of a"
    examples = eval_examples(tmp_path / "out", "captions-train-000000.tar")
    assert examples["captions_train_000000003"].target == " absolute"
    lines = ['{"image": "imgs/a.jpg", "caption": "first"}', "", '{"image": "imgs/b.png", "caption": "second"}']
    (data / "caps.jsonl").write_text("\n".join(lines) + "\n")
    assert convert_captions(data / "caps.jsonl", tmp_path / "j", split="val").written("captions-val") == 2
    (data / "odd.jsonl").write_text('{"pic": "imgs/a.jpg", "desc": "custom"}\n')
    with pytest.raises(DataError) as exc:  # both missing columns in one message
        convert_captions(data / "odd.jsonl", tmp_path / "o")
    assert str(exc.value).endswith("(columns: pic, desc): no image column (image/file_name/filename/filepath/"
                                   "image_path/path): name it with --image-column; no caption column (caption/text): "
                                   "name it with --caption-column")
    convert_captions(data / "odd.jsonl", tmp_path / "o", image_column="pic", caption_column="desc")
    assert eval_examples(tmp_path / "o", "captions-train-000000.tar")["captions_train_000000000"].target == " custom"
