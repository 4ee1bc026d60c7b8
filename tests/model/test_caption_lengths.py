"""train_packing's caption lengths: read from real caption files, counted as training counts them, and
the bench's captions tokenise to exactly the drawn lengths."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from frozen.bench.caption_lengths import (
    CC3M_VAL_SMOLLM2,
    describe,
    histogram,
    load_table,
    read_captions,
    token_counts,
)
from frozen.errors import FrozenError

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = ["A man riding a wave on top of a surfboard.", "two dogs", "a cat on a red sofa near a window"]


def test_readers_agree_on_the_three_formats(tmp_path):
    tsv = tmp_path / "cc3m.tsv"
    tsv.write_text("".join(f'{c}\thttp://x/{i}.jpg\n' for i, c in enumerate(CAPTIONS)) + "\n", encoding="utf-8")
    coco = tmp_path / "captions_val2014.json"
    coco.write_text(json.dumps({"annotations": [{"image_id": i, "id": i, "caption": c + "  "}
                                                for i, c in enumerate(CAPTIONS)] + [{"caption": " "}]}))
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": [{"sentences": [{"raw": c} for c in CAPTIONS[:2]]},
                                               {"sentences": [{"raw": CAPTIONS[2]}]}]}))
    for path, kind in ((tsv, "cc3m_tsv"), (coco, "coco"), (karpathy, "karpathy")):
        assert read_captions(path, kind) == CAPTIONS  # stripped, empty ones dropped
    # a quote in a TSV caption is text, not CSV quoting
    tsv.write_text('a "quoted\tu\nnext line\tv\n', encoding="utf-8")
    assert read_captions(tsv, "cc3m_tsv") == ['a "quoted', "next line"]


def test_bad_caption_files_are_one_line(tmp_path):
    with pytest.raises(FrozenError, match="no such file"):
        read_captions(tmp_path / "missing.tsv", "cc3m_tsv")
    wrong = tmp_path / "dataset_coco.json"
    wrong.write_text(json.dumps({"images": [{"filename": "x.jpg"}]}))
    with pytest.raises(FrozenError, match="not a karpathy caption file"):
        read_captions(wrong, "karpathy")
    empty = tmp_path / "captions_val2014.json"
    empty.write_text(json.dumps({"annotations": [{"caption": "  "}]}))
    with pytest.raises(FrozenError, match="no captions"):
        read_captions(empty, "coco")


def test_token_counts_are_template_plus_eos(tiny_model):
    tok = tiny_model.tokenizer
    counts = token_counts(CAPTIONS, tok)
    assert counts == [len(tok(" " + c, add_special_tokens=False)["input_ids"]) + 1 for c in CAPTIONS]
    # the collator's own count of one caption example: prompt "" + target + EOS
    import torch

    from frozen.data.collate import Collator
    from frozen.data.samples import Example
    batch = Collator(tok, 64)([Example(key=str(i), kind="caption", prompt="", target=" " + c, meta={},
                                       image=torch.zeros(3, 8, 8)) for i, c in enumerate(CAPTIONS)])
    assert batch["num_text_tokens"] == sum(counts)
    assert histogram([3, 5, 3]) == {3: 2, 5: 1} and list(histogram([9, 2, 5])) == [2, 5, 9]


def test_builtin_table_and_its_statistics():
    counts = CC3M_VAL_SMOLLM2["counts"]
    assert sum(counts.values()) == CC3M_VAL_SMOLLM2["captions"] == 15833
    stats = describe(counts)
    assert stats["captions"] == 15833 and stats["median"] == 11 and stats["max"] == 48
    assert stats["mean"] == pytest.approx(11.955, abs=1e-3)
    assert describe({2: 1, 4: 1}) == {"captions": 2, "mean": 3.0, "median": 3.0, "p90": pytest.approx(3.8),
                                      "p99": pytest.approx(3.98), "max": 4}
    assert load_table(None) is CC3M_VAL_SMOLLM2


def test_script_writes_a_table_the_bench_reads(tmp_path, tiny_gpt2):
    tsv = tmp_path / "val.tsv"
    tsv.write_text("".join(f"{c}\thttp://x/{i}\n" for i, c in enumerate(CAPTIONS * 3)), encoding="utf-8")
    out = tmp_path / "lengths.json"
    run = subprocess.run([sys.executable, "scripts/caption_lengths.py", "--cc3m-tsv", str(tsv), "--lm",
                          str(tiny_gpt2), "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    table = load_table(out)
    assert table["captions"] == 9 and sum(table["counts"].values()) == 9
    assert all(c == 3 for c in table["counts"].values())  # each caption three times
    assert table["stats"]["captions"] == 9 and len(table["sha256"]) == 64
    bad = subprocess.run([sys.executable, "scripts/caption_lengths.py", "--coco", str(tsv), "--lm", str(tiny_gpt2)],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "not a coco caption file" in bad.stderr


@pytest.mark.parametrize("content", ['{"counts": {"1": 4}}', '{"counts": {}}', '{"rows": []}', "not json"])
def test_bad_tables_are_refused(tmp_path, content):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(FrozenError, match="--caption-lengths"):
        load_table(path)


def test_bench_captions_have_the_drawn_lengths(tiny_model):
    from frozen.bench.packing import caption_examples

    counts = {2: 1, 7: 3, 30: 1}
    examples = caption_examples(200, 8, counts, tiny_model.tokenizer, seed=3)
    lengths = token_counts([e.target[1:] for e in examples], tiny_model.tokenizer)
    assert set(lengths) == set(counts)  # every drawn length, exactly
    assert 0.45 < lengths.count(7) / 200 < 0.75  # weights 3/5
    again = caption_examples(200, 8, counts, tiny_model.tokenizer, seed=3)
    assert [e.target for e in again] == [e.target for e in examples]  # seeded
    assert [e.target for e in caption_examples(200, 8, counts, tiny_model.tokenizer, seed=4)] != \
        [e.target for e in examples]
