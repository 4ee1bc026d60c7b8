"""The shard pipeline (frozen.data: shards, samples, streams, collate, pipeline) on shards the tests write.

Covers collation (labels, EOS, padding, truncation), bad-data accounting, shard errors, the
deterministic train stream with exact resume, node/worker splits, the exact eval pass and
img2dataset's layout read as-is.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from webdataset import TarWriter

import frozen.data.streams as streams_mod
from frozen.bench.lib import measure_throughput
from frozen.config import DataConfig, SampleTextConfig, raise_problems
from frozen.core.tiny import tiny_tokenizer
from frozen.data.pipeline import build_eval_loader, build_train_loader, iter_eval_samples
from frozen.data.samples import SkipCounter, check_image_bytes, iter_shard, parse_sample
from frozen.data.shards import dataset_size, resolve_shards
from frozen.errors import DataError, FrozenConfigError
from frozen.prep.shards import ShardSink

COLORS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 160, 0), "gray": (128, 128, 128)}


def image_bytes(seed: int, fmt: str = "PNG", size: tuple[int, int] = (24, 16)) -> bytes:
    """A small random (non-square, to exercise padding) image encoded as PNG or JPEG."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def write_caption_shards(root: Path, prefix: str, counts: list[int], start: int = 0) -> list[str]:
    """Shards ``{root}/{prefix}-{i:06d}.tar`` of caption samples keyed ``{prefix}_{n:04d}``."""
    keys, n = [], start
    with ShardSink(root, prefix, max_count=10**9) as sink:
        for shard, count in enumerate(counts):
            for j in range(count):
                if shard > 0 and j == 0:
                    sink.max_count = sink.counts[-1]  # make this write start a new shard
                key = f"{prefix}_{n:04d}"
                sink.write(key, {"png": image_bytes(n), "txt": f"caption number {n}"})
                sink.max_count = 10**9
                keys.append(key)
                n += 1
    return keys


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, list[str]]:
    """4 shards x 12 caption samples."""
    root = tmp_path_factory.mktemp("shards")
    return root, write_caption_shards(root, "cap", [12, 12, 12, 12])


def cfg_for(pattern: str, **kw) -> DataConfig:
    return DataConfig(train_shards=pattern, **{"num_workers": 0, "shuffle_buffer": 20, **kw})


def take(loader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_parse_sample_caption_and_vqa_sources():
    cfg = SampleTextConfig()
    png = image_bytes(0)
    ex = parse_sample("a", {"png": png, "txt": b" a dog "}, cfg)
    assert (ex.kind, ex.prompt, ex.target) == ("caption", "", " a dog")
    many = {"jpg": image_bytes(1, "JPEG"), "json": json.dumps({"captions": ["one", "two", "three"]}).encode()}
    assert parse_sample("b", many, cfg).target == " one"  # no seed: the first caption
    picks = {parse_sample(f"k{i}", many, cfg, caption_seed=0).target for i in range(30)}
    assert picks == {" one", " two", " three"}  # random choice varies per key...
    assert parse_sample("k1", many, cfg, caption_seed=0).target == parse_sample("k1", many, cfg, caption_seed=0).target
    vqa = {"question": "what is it?", "answers": ["cat", "dog", "dog", {"answer": "cat"}, "cat"]}
    ex = parse_sample("c", {"png": png, "json": json.dumps(vqa).encode()}, cfg)
    assert (ex.kind, ex.prompt, ex.target) == ("vqa", " Q: what is it? A:", " cat")  # most common
    vqa["multiple_choice_answer"] = "dog"
    assert parse_sample("c", {"png": png, "json": json.dumps(vqa).encode()}, cfg).target == " dog"
    no_answer = json.dumps({"question": "why?"}).encode()
    assert parse_sample("d", {"png": png, "json": no_answer}, cfg) == "missing_answer"
    assert parse_sample("d", {"png": png, "json": no_answer}, cfg, require_answer=False).target == ""


def test_image_byte_checks():
    png, jpg = image_bytes(0), image_bytes(0, "JPEG")
    assert check_image_bytes(png) is None and check_image_bytes(jpg) is None
    assert check_image_bytes(png[: len(png) // 2]) == "truncated_image"
    assert check_image_bytes(jpg[: len(jpg) // 2]) == "truncated_image"
    assert check_image_bytes(b"hello, not an image") == "not_image"


def test_data_config_validation():
    with pytest.raises(FrozenConfigError):
        raise_problems(DataConfig.check(DataConfig(train_shards="x", per_image_caption="all")))
    with pytest.raises(FrozenConfigError):
        raise_problems(DataConfig.check(DataConfig(train_shards="x", vqa_prompt=" Q: {q} A:")))


# ----------------------------------------------------------------------------- shard patterns


def test_resolve_shards_patterns_and_errors(shards, tmp_path):
    root, _ = shards
    urls = resolve_shards("cap-{000000..000001}.tar::cap-00000[23].tar", str(root))
    assert [Path(u).name for u in urls] == [f"cap-{i:06d}.tar" for i in range(4)]
    assert resolve_shards(str(root / "cap-000000.tar"), "elsewhere") == [str(root / "cap-000000.tar")]
    assert dataset_size(urls) == 48
    hint = r"make_shards\.py easyvqa --out data/easyvqa"
    with pytest.raises(DataError, match=r"6 shard file\(s\) missing, first .*cap-000004\.tar.*" + hint):
        resolve_shards("cap-{000000..000009}.tar", str(root))
    with pytest.raises(DataError, match="matches no files"):
        resolve_shards("nothing-*.tar", str(root))
    with pytest.raises(DataError, match="empty shard pattern"):
        resolve_shards(" :: ", str(root))
    with pytest.raises(DataError, match="missing"):  # before any worker starts
        build_train_loader(cfg_for("x-{0..3}.tar"), tiny_tokenizer(), data_root=str(tmp_path), image_size=16,
                           batch_size=2, seed=0)


# ----------------------------------------------------------------------------------- bad data


def write_bad_shards(root: Path) -> list[str]:
    """Shard ``bad-000000``: good samples interleaved with one of each bad kind; ``bad-000001``:
    three good samples, then the tar is cut inside the fourth sample. Returns the good keys."""
    png = image_bytes(7)
    corrupt = bytearray(png)
    corrupt[40:-20] = bytes(len(corrupt) - 60)  # structure intact (IEND present), pixel data garbage
    with TarWriter(str(root / "bad-000000.tar"), encoder=False) as tw:
        samples = [
            ("good_0", {"png": png, "txt": b"fine"}),
            ("trunc_img", {"png": png[: len(png) // 2], "txt": b"cut"}),
            ("not_img", {"jpg": b"this is a text file", "txt": b"text"}),
            ("good_1", {"jpg": image_bytes(8, "JPEG"), "json": b'{"caption": "ok"}'}),
            ("empty_cap", {"png": png, "txt": b"   "}),
            ("no_cap", {"png": png}),
            ("no_img", {"txt": b"orphan caption"}),
            ("bad_json", {"png": png, "json": b"{not json"}),
            ("corrupt", {"png": bytes(corrupt), "txt": b"garbage pixels"}),
            ("good_2", {"png": png, "txt": b"also fine"}),
        ]
        for key, files in samples:
            tw.write({"__key__": key, **files})
    with TarWriter(str(root / "bad-000001.tar"), encoder=False) as tw:
        for i in range(4):
            tw.write({"__key__": f"tail_{i}", "png": image_bytes(20 + i), "txt": f"tail {i}".encode()})
    raw = (root / "bad-000001.tar").read_bytes()
    cut = raw.index(b"tail_3.png") + 512 + 10  # inside the 4th sample's first member's data
    (root / "bad-000001.tar").write_bytes(raw[:cut])
    return ["good_0", "good_1", "good_2", "tail_0", "tail_1", "tail_2"]


EXPECTED_BAD = {"truncated_image": 1, "not_image": 1, "empty_caption": 1, "missing_caption": 1,
                "missing_image": 1, "bad_json": 1, "corrupt_image": 1, "truncated_tar": 1}


def test_bad_data_skipped_and_counted_exactly(tmp_path):
    good = write_bad_shards(tmp_path)
    counter = SkipCounter()
    got = [e.key for e in iter_eval_samples("bad-{000000..000001}.tar", data_root=str(tmp_path), image_size=16,
                                            counter=counter)]
    assert got == good
    assert dict(counter.counts) == EXPECTED_BAD
    assert "truncated_tar: 1" in counter.summary()


def test_skip_counter_summary_line():
    counter = SkipCounter()
    counter.update({"keys": ["a", "b", "c"], "skipped": {"not_image": 1, "bad_json": 2, "empty_caption": 0},
                    "num_truncated": 4})
    assert counter.summary() == "3 samples; skipped 3 bad (bad_json: 2, not_image: 1); 4 token sequences truncated " \
                                "to max_length"
    assert SkipCounter(samples=5).summary() == "5 samples; no bad data; 0 token sequences truncated to max_length"


def test_truncated_tar_at_member_boundary_is_counted(tmp_path):
    write_caption_shards(tmp_path, "t", [3])
    raw = (tmp_path / "t-000000.tar").read_bytes()
    (tmp_path / "t-000000.tar").write_bytes(raw[: raw.index(b"t_0002.png")])  # cut exactly at a header
    counts: Counter = Counter()
    assert [k for k, _ in iter_shard(str(tmp_path / "t-000000.tar"), counts)] == ["t_0000", "t_0001"]
    assert counts == {"truncated_tar": 1}


def test_bad_data_counts_reach_main_process_with_workers(tmp_path, tok):
    good = set(write_bad_shards(tmp_path))
    cfg = cfg_for("bad-{000000..000001}.tar", num_workers=2, shuffle_buffer=4)
    loader = build_train_loader(cfg, tok, data_root=str(tmp_path), image_size=16, batch_size=2, seed=0)
    seen: list[str] = []
    for _, batch in zip(range(12), loader):  # 12 batches = several epochs of each worker's share
        seen += batch["keys"]
    assert set(seen) == good  # every good sample arrives, no bad one does
    assert set(loader.skipped.counts) == set(EXPECTED_BAD)  # counted in the workers, summed here
    assert loader.skipped.samples == len(seen) < 24  # a corrupt image leaves its batch one short


# ---------------------------------------------------------------------------- train stream


def keys_of(batches: list[dict]) -> list[list[str]]:
    return [b["keys"] for b in batches]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_order_is_deterministic_and_resume_is_exact(shards, tok, num_workers):
    root, keys = shards
    cfg = cfg_for("cap-{000000..000003}.tar", num_workers=num_workers)
    full = take(build_train_loader(cfg, tok, data_root=str(root), image_size=16, batch_size=5, seed=3), 14)
    again = take(build_train_loader(cfg, tok, data_root=str(root), image_size=16, batch_size=5, seed=3), 14)
    assert keys_of(full) == keys_of(again)
    other = take(build_train_loader(cfg, tok, data_root=str(root), image_size=16, batch_size=5, seed=4), 14)
    assert keys_of(full) != keys_of(other)
    assert sum(len(k) for k in keys_of(full)) == 70 > len(keys)  # infinite: continues into the next epoch
    for skip in (3, 4):
        tail = take(build_train_loader(cfg, tok, data_root=str(root), image_size=16, batch_size=5, seed=3,
                                       skip_batches=skip), 14 - skip)
        assert keys_of(tail) == keys_of(full[skip:])
        for a, b in zip(tail, full[skip:]):
            assert torch.equal(a["images"], b["images"]) and torch.equal(a["input_ids"], b["input_ids"])


def test_skipped_batches_are_not_decoded(shards, tok, monkeypatch):
    root, _ = shards
    calls = []
    real = streams_mod.decode_example
    monkeypatch.setattr(streams_mod, "decode_example", lambda *a: calls.append(1) or real(*a))
    cfg = cfg_for("cap-{000000..000003}.tar")
    take(build_train_loader(cfg, tok, data_root=str(root), image_size=16, batch_size=4, seed=0, skip_batches=7), 2)
    assert len(calls) == 2 * 4


@pytest.mark.parametrize("num_shards,slots", [(4, 4), (6, 4), (2, 6)])
def test_epoch_split_across_ranks_and_workers_is_disjoint_and_complete(tmp_path, num_shards, slots):
    keys = write_caption_shards(tmp_path, "s", [5] * num_shards)
    urls = resolve_shards(f"s-{{000000..{num_shards - 1:06d}}}.tar", str(tmp_path))
    for epoch in (0, 1):
        shares = [[k for k, _, _ in streams_mod._epoch_samples(urls, slot, slots, epoch, 0, Counter())]
                  for slot in range(slots)]
        flat = [k for share in shares for k in share]
        assert sorted(flat) == sorted(keys) and len(set(flat)) == len(flat)
        if num_shards < slots:  # sample-level split: shares differ by at most one sample
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_fewer_shards_than_workers_splits_by_sample(tmp_path, tok):
    keys = write_caption_shards(tmp_path, "one", [12])
    cfg = cfg_for("one-000000.tar", num_workers=2, shuffle_buffer=0)
    loader = build_train_loader(cfg, tok, data_root=str(tmp_path), image_size=16, batch_size=3, seed=0)
    batches = take(loader, 4)  # 2 per worker
    got = [k for b in batches for k in b["keys"]]
    assert sorted(got) == keys  # both workers busy, one epoch each: every sample once


def test_ranks_get_different_data(shards, tok):
    root, _ = shards
    cfg = cfg_for("cap-{000000..000003}.tar", shuffle_buffer=0)
    per_rank = [
        {k for b in take(build_train_loader(cfg, tok, data_root=str(root), image_size=16, batch_size=4, seed=0, rank=r,
                                            world_size=2), 6)
         for k in b["keys"]}
        for r in range(2)
    ]
    assert len(per_rank[0]) == len(per_rank[1]) == 24 and not per_rank[0] & per_rank[1]


def test_mixed_caption_and_vqa_shards(tmp_path, tok):
    write_caption_shards(tmp_path, "cap", [6])
    with ShardSink(tmp_path, "vqa") as sink:
        for i in range(6):
            meta = {"question": f"what is {i}?", "answers": [str(i)] * 10, "question_id": i, "image_id": i}
            sink.write(f"q{i}", {"png": image_bytes(i), "json": json.dumps(meta)})
    cfg = cfg_for("cap-000000.tar::vqa-000000.tar")
    batches = take(build_train_loader(cfg, tok, data_root=str(tmp_path), image_size=16, batch_size=12, seed=0), 1)
    by_key = {k: (p, t) for k, p, t in zip(batches[0]["keys"], batches[0]["prompts"], batches[0]["targets"])}
    assert by_key["q3"] == (" Q: what is 3? A:", " 3")
    assert by_key["cap_0002"] == ("", " caption number 2")
    assert Counter(batches[0]["kinds"]) == {"caption": 6, "vqa": 6}


# ------------------------------------------------------------------------------------- eval


@pytest.mark.parametrize("num_workers", [0, 2])
def test_eval_single_pass_covers_each_sample_once(tmp_path, tok, num_workers):
    keys = write_caption_shards(tmp_path, "ev", [6, 4])  # 10 samples, 2 shards < 3 ranks
    cfg = DataConfig(val_shards="ev-{000000..000001}.tar", num_workers=num_workers)
    per_rank = []
    for rank in range(3):
        loader = build_eval_loader(cfg, tok, data_root=str(tmp_path), image_size=16, batch_size=2, rank=rank,
                                   world_size=3)
        batch_keys = [k for b in loader for k in b["keys"]]
        sample_keys = [e.key for e in iter_eval_samples(cfg.val_shards, data_root=str(tmp_path), image_size=16,
                                                        rank=rank, world_size=3, num_workers=num_workers)]
        assert batch_keys == sample_keys  # same deterministic order both ways
        assert sorted(batch_keys) == keys[rank::3]  # rank r gets samples r, r+3, ...
        per_rank.append(batch_keys)
    flat = [k for share in per_rank for k in share]
    assert sorted(flat) == keys and len(flat) == len(set(flat)) == 10


def test_eval_samples_are_decoded_examples(shards):
    root, keys = shards
    examples = list(iter_eval_samples("cap-000000.tar", data_root=str(root), image_size=32))
    assert [e.key for e in examples] == keys[:12]
    first = examples[0]
    assert first.image.shape == (3, 32, 32) and first.image.dtype == torch.float32
    assert 0.0 <= float(first.image.min()) and float(first.image.max()) <= 1.0
    assert first.meta["captions"] == ["caption number 0"] and first.target == " caption number 0"


# ------------------------------------------------------------------------------- img2dataset


def test_img2dataset_layout_is_read_as_is(tmp_path, tok):
    """img2dataset writes ``{key}.jpg``, ``{key}.txt``, ``{key}.json`` with numeric keys."""
    with TarWriter(str(tmp_path / "00000.tar"), encoder=False) as tw:
        for i in range(4):
            meta = {"url": f"http://x/{i}.jpg", "caption": f"photo {i}" if i != 3 else None, "key": f"{i:09d}",
                    "status": "success", "error_message": None, "width": 24, "height": 16}
            tw.write({"__key__": f"{i:09d}", "jpg": image_bytes(i, "JPEG"), "txt": f"photo {i}".encode(),
                      "json": json.dumps(meta).encode()})
    cfg = cfg_for("{00000..00000}.tar", shuffle_buffer=0)
    batch = take(build_train_loader(cfg, tok, data_root=str(tmp_path), image_size=16, batch_size=4, seed=0), 1)[0]
    assert sorted(zip(batch["keys"], batch["targets"])) == [(f"{i:09d}", f" photo {i}") for i in range(4)]
    assert batch["images"].shape == (4, 3, 16, 16)
    assert batch["meta"][0]["url"].startswith("http://x/")


def test_measure_throughput(shards, tok):
    root, _ = shards
    loader = build_train_loader(cfg_for("cap-{000000..000003}.tar"), tok, data_root=str(root), image_size=16,
                                batch_size=4, seed=0)
    assert measure_throughput(loader, num_batches=5, warmup_batches=1) > 0
