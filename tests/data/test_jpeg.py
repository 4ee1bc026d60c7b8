"""Reduced-scale JPEG decoding (frozen.data.jpeg, ``data.jpeg_draft``): the scale it picks, what it leaves alone
(PNG, small JPEGs: bit for bit), how far its pixels are from a full decode on real photos, damaged JPEGs."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from frozen.bench.jpeg import photo, photo_jpegs, pixel_difference
from frozen.config import DataConfig
from frozen.core.tiny import tiny_tokenizer
from frozen.data.jpeg import draft_scale
from frozen.data.pipeline import build_train_loader, iter_eval_samples
from frozen.data.samples import Example, decode_example, decode_image, parse_sample
from frozen.model.vision import image_transform, to_unit_float
from frozen.prep.shards import ShardSink


def encoded(size: tuple[int, int], fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A smooth random image (noise upscaled, so JPEG keeps it) of ``size`` in ``fmt``."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
    buf = io.BytesIO()
    small.resize(size, Image.Resampling.BICUBIC).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("size, target, scale", [
    ((640, 480), 224, 2),  # 320 x 240: the longer side 320 >= 224; 1/4 would give 160
    ((480, 640), 224, 2),  # portrait: the longer side decides
    ((1000, 300), 224, 4),  # 250 x 75: pad-and-resize only needs the longer side
    ((2000, 1500), 224, 8),  # 250 x 188
    ((447, 300), 224, 2),  # ceil(447 / 2) = 224: exactly the target
    ((446, 300), 224, 1),  # 223 < 224: full decode
    ((400, 300), 224, 1),
    ((640, 480), 64, 8),
    ((64, 48), 64, 1),
])
def test_draft_scale_is_the_largest_reduction_keeping_the_longer_side(size, target, scale):
    assert draft_scale(size, target) == scale


@pytest.mark.parametrize("size, target, decoded", [
    ((640, 480), 224, (320, 240)),
    ((480, 640), 224, (240, 320)),
    ((1000, 300), 224, (250, 75)),
    ((2000, 1500), 224, (250, 188)),
    ((447, 300), 224, (224, 150)),
    ((400, 300), 224, (400, 300)),
    ((4000, 3), 224, (2000, 2)),  # a side under 8 px: PIL takes the smaller reduction 2, still >= 224
])
def test_decode_image_decodes_large_jpegs_at_the_reduced_scale(size, target, decoded):
    data = encoded(size)
    image = decode_image(data, target)
    assert (image.size, image.mode) == (decoded, "RGB")
    assert decode_image(data).size == size  # no target: full decode


def test_png_and_small_jpegs_are_decoded_bit_for_bit_as_before():
    for data in (encoded((640, 480), "PNG"), encoded((400, 300)), encoded((32, 24)), encoded((640, 480), "WEBP")):
        assert decode_image(data, 224).tobytes() == decode_image(data).tobytes()
        assert decode_image(data, 224).size == decode_image(data).size


def test_reduced_decode_on_real_photos_same_shape_and_close_to_full_decode():
    """scikit-image's photos at 640 x 480, JPEG quality 90, to 224 px: measured mean |diff| 0.62/255, max 22/255,
    PSNR 46 dB (docs/data.md); the bounds leave room for other libjpeg builds."""
    jpegs = photo_jpegs()
    assert len(jpegs) >= 19
    transform = image_transform(224)
    for data in list(jpegs.values())[:3]:
        full, reduced = transform(decode_image(data)), transform(decode_image(data, 224))
        assert reduced.shape == full.shape == (3, 224, 224) and reduced.dtype == full.dtype == torch.float32
        assert not torch.equal(reduced, full)  # really decoded differently
    diff = pixel_difference(jpegs)
    assert diff["photos"] == len(jpegs)
    assert diff["mean_abs"] < 1.0 and diff["max_abs"] <= 40 and diff["psnr_db"] > 42


def test_photo_is_centre_cropped_to_the_stored_size():
    image = photo("coffee")  # 600 x 400 stored: cropped to 4:3, then resized
    assert (image.size, image.mode) == ((640, 480), "RGB")


def test_damaged_jpegs_keep_their_bad_data_handling_with_reduced_decode(tmp_path):
    data = encoded((640, 480))
    bad_header = data.replace(b"\xff\xc0", b"\xff\xc0\x00\x00", 1)  # start-of-frame garbled: PIL cannot open it
    counts: Counter = Counter()
    example = Example("k", "caption", "", " x", {}, bad_header, url="u.tar")
    assert decode_example(example, image_transform(224), counts, 224) is None
    assert counts == {"corrupt_image": 1}
    assert parse_sample("k", {"jpg": data[: len(data) // 2], "txt": b"x"}, DataConfig(train_shards="x")) \
        == "truncated_image"  # cut: no end marker, skipped before decoding
    with ShardSink(tmp_path, "bad") as sink:
        sink.write("cut", {"jpg": data[: len(data) // 2], "txt": "cut"})
        sink.write("good", {"jpg": data, "txt": "fine"})
        sink.write("corrupt", {"jpg": bad_header, "txt": "garbled header"})
    cfg = DataConfig(train_shards="bad-*.tar", num_workers=0, shuffle_buffer=0)
    loader = build_train_loader(cfg, tiny_tokenizer(), data_root=str(tmp_path), image_size=224, batch_size=2, seed=0)
    batch = next(iter(loader))
    assert batch["keys"] == ["good"] and batch["skipped"] == {"corrupt_image": 1, "truncated_image": 1}


def _shards(root, fmt: str) -> None:
    with ShardSink(root, fmt.lower()) as sink:
        for i in range(6):
            sink.write(f"s{i}", {fmt.lower().replace("jpeg", "jpg"): encoded((640, 480), fmt, seed=i), "txt": f"c {i}"})


def _batches(root, pattern: str, draft: bool | None) -> list[dict]:
    extra = {} if draft is None else {"jpeg_draft": draft}
    cfg = DataConfig(train_shards=pattern, num_workers=0, shuffle_buffer=0, **extra)
    loader = build_train_loader(cfg, tiny_tokenizer(), data_root=str(root), image_size=64, batch_size=3, seed=0)
    it = iter(loader)
    return [next(it) for _ in range(2)]


def test_loader_reduced_decode_is_on_by_default_and_png_shards_are_unchanged(tmp_path):
    _shards(tmp_path, "JPEG")
    _shards(tmp_path, "PNG")
    assert DataConfig(train_shards="x").jpeg_draft is True
    default, on, off = (_batches(tmp_path, "jpeg-*.tar", d) for d in (None, True, False))
    for a, b, c in zip(default, on, off):
        assert a["keys"] == b["keys"] == c["keys"] and torch.equal(a["images"], b["images"])
        assert a["images"].shape == c["images"].shape == (3, 3, 64, 64)
        assert a["images"].dtype == c["images"].dtype == torch.uint8  # the training loader ships pixels
        assert not torch.equal(a["images"], c["images"])
        assert float((to_unit_float(a["images"]) - to_unit_float(c["images"])).abs().mean()) < 2 / 255
    for a, b in zip(_batches(tmp_path, "png-*.tar", True), _batches(tmp_path, "png-*.tar", False)):
        assert a["keys"] == b["keys"] and torch.equal(a["images"], b["images"])  # PNG: bit for bit
    full = [e.image for e in iter_eval_samples("jpeg-*.tar", data_root=str(tmp_path), image_size=64, jpeg_draft=False)]
    reduced = [e.image for e in iter_eval_samples("jpeg-*.tar", data_root=str(tmp_path), image_size=64)]
    transform = image_transform(64)
    assert torch.equal(full[0], transform(decode_image(encoded((640, 480), seed=0))))
    assert torch.equal(reduced[0], transform(decode_image(encoded((640, 480), seed=0), 64)))
