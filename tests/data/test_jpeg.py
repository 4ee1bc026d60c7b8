"""Reduced-scale JPEG decoding (frozen.data.jpeg, ``data.jpeg_draft``): the scale it picks, that libjpeg-turbo's
pixels through simplejpeg are PIL's (full decode, and 1/2 against PIL's draft), what it leaves to PIL (PNG, CMYK,
damaged data, decompression bombs), how far its pixels are from a full decode on real photos, damaged JPEGs."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

from frozen.bench.jpeg import photo, photo_jpegs, pixel_difference
from frozen.config import DataConfig
from frozen.core.tiny import tiny_tokenizer
from frozen.data.jpeg import FULL, decode_jpeg, reduced_scale
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
    ((640, 480), 224, 3),  # 240 x 180: the longer side 240 >= 224; 1/4 would give 160
    ((480, 640), 224, 3),  # portrait: the longer side decides
    ((1000, 300), 224, 2),  # 250 x 75: pad-and-resize only needs the longer side
    ((2000, 1500), 224, 1),  # 250 x 188
    ((595, 300), 224, 3),  # ceil(595 * 3 / 8) = ceil(223.1) = 224: exactly the target, as libjpeg rounds
    ((594, 300), 224, 4),  # ceil(222.75) = 223 < 224: the next scale, 1/2
    ((447, 300), 224, 4),  # ceil(447 / 2) = 224
    ((446, 300), 224, FULL),  # 223 < 224, and 5/8-7/8 are not used: full decode
    ((400, 300), 224, FULL),
    ((640, 480), 64, 1),
    ((64, 48), 64, FULL),
    ((640, 480), None, FULL),  # no target: full decode
])
def test_reduced_scale_is_the_smallest_eighth_keeping_the_longer_side(size, target, scale):
    assert reduced_scale(size, target) == scale


@pytest.mark.parametrize("size, target, decoded", [
    ((640, 480), 224, (240, 180)),
    ((480, 640), 224, (180, 240)),
    ((1000, 300), 224, (250, 75)),
    ((2000, 1500), 224, (250, 188)),
    ((637, 481), 224, (239, 181)),  # ceil(637 * 3 / 8), ceil(481 * 3 / 8)
    ((447, 300), 224, (224, 150)),
    ((400, 300), 224, (400, 300)),
    ((4000, 3), 224, (500, 1)),  # a side under 8 px: ceil(3 / 8) = 1
])
def test_decode_image_decodes_large_jpegs_at_the_reduced_scale(size, target, decoded):
    data = encoded(size)
    image = decode_image(data, target)
    assert (image.size, image.mode) == (decoded, "RGB")
    assert decode_image(data).size == size  # no target: full decode


def _jpeg(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **options)
    return buf.getvalue()


def _pil(data: bytes, draft: tuple[int, int] | None = None) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        if draft:
            image.draft(None, draft)
        return image.convert("RGB")


def test_libjpeg_turbo_decode_is_pils_bit_for_bit():
    """Full decode == PIL's decode, and the 1/2 scale == PIL's draft at 1/2 (both are libjpeg-turbo), over the
    chroma subsamplings, progressive, grayscale and odd sizes; so only the scale changes pixels."""
    base = Image.open(io.BytesIO(encoded((637, 481)))).convert("RGB")
    kinds = {"4:2:0": _jpeg(base), "4:2:2": _jpeg(base, subsampling=1), "4:4:4": _jpeg(base, subsampling=0),
             "progressive": _jpeg(base, progressive=True), "grayscale": _jpeg(base.convert("L")),
             "photo": photo_jpegs()["astronaut"]}
    for kind, data in kinds.items():
        full = decode_jpeg(data)
        assert full is not None and full.mode == "RGB", kind
        assert full.tobytes() == _pil(data).tobytes() and decode_image(data).tobytes() == full.tobytes(), kind
        w, h = _pil(data).size
        half = decode_jpeg(data, (max(w, h) + 1) // 2)  # reduced_scale picks 4 (1/2)
        assert half.size == (-(-w // 2), -(-h // 2)), kind
        assert half.tobytes() == _pil(data, (w // 2, h // 2)).tobytes(), kind


def test_what_libjpeg_turbo_does_not_take_is_decoded_by_pil_in_full(monkeypatch):
    base = Image.open(io.BytesIO(encoded((640, 480)))).convert("RGB")
    cmyk = _jpeg(base.convert("CMYK"))  # libjpeg-turbo's CMYK -> RGB is not PIL's
    for data in (cmyk, encoded((640, 480), "PNG"), encoded((640, 480), "WEBP")):
        assert decode_jpeg(data, 224) is None
        assert decode_image(data, 224).tobytes() == _pil(data).tobytes()  # PIL, in full, as before
    # A stray byte before the end marker: libjpeg-turbo warns ("Corrupt JPEG data: 1 extraneous bytes before
    # marker 0xd9"), simplejpeg raises ValueError, and PIL decodes it in full as it always did
    extraneous = encoded((640, 480))[:-2] + b"\x00\x00\xff\xd9"
    with pytest.raises(ValueError, match="extraneous bytes"):
        simplejpeg.decode_jpeg(extraneous)
    for target in (None, 224):
        assert decode_jpeg(extraneous, target) is None
        assert decode_image(extraneous, target).tobytes() == _pil(extraneous).tobytes()
    assert decode_image(cmyk, 224).size == (640, 480)
    photo_jpeg = photo_jpegs()["astronaut"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 640 * 480 - 1)  # over PIL's decompression-bomb limit: PIL's
    assert decode_jpeg(photo_jpeg, 224) is None  # check (a warning here, an error past twice the limit) decides


def test_ycck_jpeg_from_libjpeg_turbo_is_decoded_by_pil_like_pils_own_cmyk():
    """libjpeg-turbo writes CMYK input as YCCK (Adobe transform 2), PIL writes it as plain CMYK (transform 0);
    both hold inverted CMYK (Adobe's convention). Neither is libjpeg-turbo's to convert: both go to PIL in
    full, and both come back as the photo they were made from."""
    rgb = _pil(photo_jpegs()["astronaut"])
    cmyk = rgb.convert("CMYK")
    ycck = simplejpeg.encode_jpeg(255 - np.asarray(cmyk), quality=90, colorspace="CMYK")  # inverted, as Adobe's
    own = _jpeg(cmyk)
    assert simplejpeg.decode_jpeg_header(ycck)[2] == "YCCK" and simplejpeg.decode_jpeg_header(own)[2] == "CMYK"
    for data in (ycck, own):
        assert decode_jpeg(data, 224) is None
        for target in (None, 224):
            image = decode_image(data, target)
            assert image.mode == "RGB" and image.tobytes() == _pil(data).tobytes()  # PIL's full decode
        error = np.abs(np.asarray(decode_image(data, 224), dtype=np.int16) - np.asarray(rgb, dtype=np.int16))
        assert error.mean() < 2, "the colours of the photo, not their inverse"


def test_png_and_small_jpegs_are_decoded_bit_for_bit_as_before():
    for data in (encoded((640, 480), "PNG"), encoded((400, 300)), encoded((32, 24)), encoded((640, 480), "WEBP")):
        assert decode_image(data, 224).tobytes() == decode_image(data).tobytes() == _pil(data).tobytes()
        assert decode_image(data, 224).size == decode_image(data).size


def test_reduced_decode_on_real_photos_same_shape_and_close_to_full_decode():
    """scikit-image's photos at 640 x 480, JPEG quality 90, to 224 px (decoded at 3/8): measured mean |diff|
    1.13/255, max 39/255, PSNR 40.7 dB (docs/data.md); the bounds leave room for other libjpeg-turbo builds."""
    jpegs = photo_jpegs()
    assert len(jpegs) >= 19
    transform = image_transform(224)
    for data in list(jpegs.values())[:3]:
        full, reduced = transform(decode_image(data)), transform(decode_image(data, 224))
        assert reduced.shape == full.shape == (3, 224, 224) and reduced.dtype == full.dtype == torch.float32
        assert not torch.equal(reduced, full)  # really decoded differently
    diff = pixel_difference(jpegs)
    assert diff["photos"] == len(jpegs)
    assert diff["mean_abs"] < 1.5 and diff["max_abs"] <= 50 and diff["psnr_db"] > 39


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
