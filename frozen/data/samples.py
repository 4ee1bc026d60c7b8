"""What one shard sample is: reading tar shards, cheap validation, text parsing, image decoding.

A shard sample is a group of consecutive tar members sharing a key (``{key}.png``, ``{key}.json``,
...), as webdataset and img2dataset write them. This module turns such a group into an
:class:`Example` (prompt + target text, encoded image bytes) in two stages, so that training can
skip samples cheaply on resume:

1. :func:`parse_sample` -- text side and *structural* image checks only (magic bytes, end marker);
   no pixels are decoded. Runs for every sample, including ones skipped on resume.
2. :func:`decode_example` -- decodes pixels and applies the image transform; runs only for
   samples that end up in a yielded batch.

Bad data never raises: each stage returns a *kind* string (see :data:`BAD_KINDS`), the caller
counts it, and :func:`warn_once` logs the first occurrence of each kind per process.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from PIL import Image

from frozen.data.jpeg import decode_jpeg

if TYPE_CHECKING:
    import torch

    from frozen.config import SampleTextConfig

log = logging.getLogger("frozen.data.pipeline")

# Every kind of bad data the pipeline skips and counts, with what it means.
BAD_KINDS: dict[str, str] = {
    "truncated_tar": "shard ends mid-archive (samples after the cut are lost)",
    "unreadable_shard": "shard could not be opened",
    "missing_image": "sample has no image file",
    "not_image": "image file is not a known image format",
    "truncated_image": "image bytes end early (no end marker)",
    "corrupt_image": "image bytes failed to decode",
    "missing_caption": "sample has neither a caption nor a question",
    "empty_caption": "caption is empty or whitespace",
    "bad_json": "json file is not a JSON object",
    "missing_answer": "VQA sample without answers (skipped in training only)",
}

# Extensions (lower-cased, after the key's first dot) that may hold the image, in priority order.
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "image", "img")

_WARNED: set[str] = set()


def warn_once(kind: str, detail: str) -> None:
    """Log the first occurrence of a bad-data kind in this process; later ones are only counted."""
    if kind not in _WARNED:
        _WARNED.add(kind)
        log.warning("skipping bad sample (%s: %s): %s; further '%s' samples are counted silently",
                    kind, BAD_KINDS.get(kind, kind), detail, kind)


@dataclass
class Example:
    """One training/eval example. ``image`` holds encoded bytes until :func:`decode_example`,
    then a float tensor ``[3, S, S]`` in ``[0, 1]``."""

    key: str
    kind: str  # "caption" or "vqa"
    prompt: str  # "" for captions; the formatted question for VQA
    target: str  # formatted caption / answer the LM must produce after the prompt
    meta: dict[str, Any]  # the sample's json (VQA) or {"captions": [...], **json} (captions)
    image: Any
    url: str = ""  # the shard the sample came from
    epoch: int = 0


@dataclass
class SkipCounter:
    """Accumulates the per-batch ``skipped`` counts (and truncations) in the main process."""

    counts: Counter = field(default_factory=Counter)
    samples: int = 0  # examples delivered in batches
    truncated: int = 0  # token sequences cut to max_length

    def add(self, skipped: dict[str, int]) -> None:
        self.counts.update({k: v for k, v in skipped.items() if v})

    def update(self, batch: dict[str, Any]) -> None:
        """Add one batch's ``skipped``, ``num_truncated`` and sample count."""
        self.add(batch.get("skipped", {}))
        self.samples += len(batch.get("keys", ()))
        self.truncated += int(batch.get("num_truncated", 0))

    def total(self) -> int:
        """Samples skipped so far (all kinds)."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for the training log, e.g. ``'1000 samples; skipped 2 (corrupt_image: 2); ...'``."""
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))
        bad = f"skipped {self.total()} bad ({kinds})" if self.total() else "no bad data"
        return f"{self.samples} samples; {bad}; {self.truncated} token sequences truncated to max_length"


# --------------------------------------------------------------------------------------------
# Reading shards


def is_remote(url: str) -> bool:
    """URLs webdataset's ``gopen`` opens itself (``pipe:``, ``http(s)://``, ``s3://``...)."""
    return url.startswith("pipe:") or "://" in url


def _ends_with_zero_blocks(path: str) -> bool:
    """A complete tar ends with (at least) two zero 512-byte blocks; a file cut at a member
    boundary does not, although ``tarfile`` then stops without an error."""
    size = os.path.getsize(path)
    if size < 1024:
        return False
    with open(path, "rb") as f:
        f.seek(size - 1024)
        return f.read(1024) == bytes(1024)


def iter_shard(url: str, counts: Counter) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {ext: bytes})`` for each sample of a tar shard, in tar order.

    Keys and extensions follow webdataset: key = path up to the first dot of the basename,
    extension lower-cased. A truncated or unreadable shard is counted (``truncated_tar`` /
    ``unreadable_shard``) and iteration moves on; members read completely before the cut are
    still yielded (an incomplete last sample is then rejected by :func:`parse_sample`).
    """
    # imported here: the webdataset package imports torch (~4 s), which the shard *writers* (frozen.prep,
    # scripts/make_shards.py) that share this module's byte checks should not pay for
    from webdataset.gopen import gopen
    from webdataset.tariterators import base_plus_ext, tar_file_iterator

    key: str | None = None
    files: dict[str, bytes] = {}
    try:
        stream = gopen(url, "rb") if is_remote(url) else open(url, "rb")
    except OSError as exc:
        counts["unreadable_shard"] += 1
        warn_once("unreadable_shard", f"{url}: {exc}")
        return
    truncated = False
    try:
        with stream:
            for member in tar_file_iterator(stream):  # default handler re-raises: we count it
                prefix, suffix = base_plus_ext(member["fname"])
                if prefix is None:
                    continue
                if prefix != key:
                    if files:
                        yield key, files  # type: ignore[misc]
                    key, files = prefix, {}
                files[suffix.lower()] = member["data"]
    except (tarfile.TarError, EOFError, OSError) as exc:
        truncated = True
        warn_once("truncated_tar", f"{url}: {exc}")
    # The end-marker check needs a plain local tar (a .tar.gz ends with gzip's trailer instead).
    if not truncated and not is_remote(url) and url.endswith(".tar") and not _ends_with_zero_blocks(url):
        truncated = True
        warn_once("truncated_tar", f"{url}: no end-of-archive marker")
    if truncated:
        counts["truncated_tar"] += 1
    if files:
        yield key, files  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Cheap image checks (no pixel decoding)


def sniff_image_format(data: bytes) -> str | None:
    """The image format from magic bytes, as a file extension, or None if not an image."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def check_image_bytes(data: bytes) -> str | None:
    """Return a bad-data kind (``not_image`` / ``truncated_image``) or None if the bytes look whole.

    JPEG: the end-of-image marker must follow the last start-of-scan marker (neither can occur
    inside entropy-coded data, and trailing bytes after EOI are tolerated). PNG: an IEND chunk.
    Other formats: magic bytes only; their truncation is caught when decoding.
    """
    fmt = sniff_image_format(data)
    if fmt is None:
        return "not_image"
    if fmt == "jpg" and data.rfind(b"\xff\xd9") < max(data.rfind(b"\xff\xda"), 2):
        return "truncated_image"
    if fmt == "png" and data.rfind(b"IEND") < 0:
        return "truncated_image"
    return None


# --------------------------------------------------------------------------------------------
# Text side


def _answer_strings(answers: Any) -> list[str]:
    """VQA answers as strings: ours are strings, raw VQAv2/OK-VQA ones are ``{"answer": ...}``."""
    out = []
    for a in answers or []:
        text = a.get("answer") if isinstance(a, dict) else a
        if isinstance(text, str) and text.strip():
            out.append(text.strip())
    return out


def vqa_answer(meta: dict[str, Any]) -> str:
    """The training answer: ``multiple_choice_answer`` if present, else the most common answer
    (ties broken by first occurrence). ``""`` if there is none."""
    mc = meta.get("multiple_choice_answer")
    if isinstance(mc, str) and mc.strip():
        return mc.strip()
    answers = _answer_strings(meta.get("answers"))
    return Counter(answers).most_common(1)[0][0] if answers else ""


def caption_list(files: dict[str, bytes], meta: dict[str, Any]) -> list[str] | None:
    """All captions of a sample, or None if it has no caption field at all.

    Precedence: json ``captions`` (list; our per-image shards), json ``caption`` (img2dataset,
    our per-pair shards), then ``txt``. A json field set to null falls through to the next source.
    """
    if isinstance(meta.get("captions"), list):
        return [str(c) for c in meta["captions"]]
    if isinstance(meta.get("caption"), str):
        return [meta["caption"]]
    if "txt" in files:
        return [files["txt"].decode("utf-8", errors="replace")]
    return None


def pick_index(n: int, key: str, epoch: int, seed: int | None) -> int:
    """Which of ``n`` captions to train on: 0 when ``seed`` is None ("first"), otherwise a hash of
    (seed, epoch, key) -- stateless, so skipping samples on resume cannot change later picks."""
    if seed is None or n <= 1:
        return 0
    return zlib.crc32(f"{seed}:{epoch}:{key}".encode()) % n


def parse_sample(
    key: str,
    files: dict[str, bytes],
    cfg: "SampleTextConfig",
    *,
    url: str = "",
    epoch: int = 0,
    caption_seed: int | None = None,
    require_answer: bool = True,
) -> Example | str:
    """Turn a raw sample into an :class:`Example` (image still encoded) or a bad-data kind.

    A json with ``question`` makes a VQA example (prompt = ``cfg.vqa_prompt``, target =
    ``cfg.vqa_target`` with :func:`vqa_answer`); otherwise the sample's caption(s) make a caption
    example (prompt ``""``, target = ``cfg.caption_template``). ``caption_seed`` None picks the
    first caption; an int picks one per (seed, epoch, key). ``require_answer=False`` (eval) keeps
    VQA samples without answers, with target ``""``.
    """
    image_ext = next((e for e in IMAGE_EXTS if e in files), None)
    if image_ext is None:
        return "missing_image"
    meta: dict[str, Any] = {}
    if "json" in files:
        try:
            meta = json.loads(files["json"])
        except (ValueError, UnicodeDecodeError):
            return "bad_json"
        if not isinstance(meta, dict):
            return "bad_json"
    image = files[image_ext]
    if isinstance(meta.get("question"), str) and meta["question"].strip():
        answer = vqa_answer(meta)
        if not answer and require_answer:
            return "missing_answer"
        prompt = cfg.vqa_prompt.format(question=meta["question"].strip())
        target = cfg.vqa_target.format(answer=answer) if answer else ""
        kind = "vqa"
    else:
        captions = caption_list(files, meta)
        if captions is None:
            return "missing_caption"
        captions = [c.strip() for c in captions if c.strip()]
        if not captions:
            return "empty_caption"
        meta = {**meta, "captions": captions}
        chosen = captions[pick_index(len(captions), key, epoch, caption_seed)]
        prompt, target, kind = "", cfg.caption_template.format(caption=chosen), "caption"
    bad = check_image_bytes(image)
    if bad is not None:
        return bad
    return Example(key=key, kind=kind, prompt=prompt, target=target, meta=meta, image=image,
                   url=url, epoch=epoch)


# --------------------------------------------------------------------------------------------
# Pixels


def decode_image(data: bytes, target: int | None = None) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image (raises on corrupt data). JPEGs go through libjpeg-turbo
    (:func:`frozen.data.jpeg.decode_jpeg`), with ``target`` at the reduced scale whose longer side is still
    >= ``target``; everything it does not take (other formats, CMYK, damaged data) is decoded by PIL in full."""
    image = decode_jpeg(data, target) if sniff_image_format(data) == "jpg" else None
    return image if image is not None else decode_with_pil(data)


def decode_with_pil(data: bytes) -> Image.Image:
    """PIL's full decode to RGB (raises on corrupt data): :func:`decode_image` for what libjpeg-turbo does not
    take, and the bench's reference for the decoder swap."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # force the decode now, so corruption raises here and not in the transform
        return image.convert("RGB")


def decode_example(example: Example, transform: Callable[[Image.Image], "torch.Tensor"], counts: Counter,
                   target: int | None = None) -> Example | None:
    """Decode ``example.image`` in place to ``transform``'s ``[3, S, S]`` (:func:`decode_image`); None if corrupt."""
    try:
        example.image = transform(decode_image(example.image, target))
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        counts["corrupt_image"] += 1
        warn_once("corrupt_image", f"{example.key} in {example.url}: {exc}")
        return None
    return example


__all__ = ["BAD_KINDS", "IMAGE_EXTS", "Example", "SkipCounter", "iter_shard", "is_remote", "sniff_image_format",
           "check_image_bytes", "vqa_answer", "caption_list", "pick_index", "parse_sample", "decode_image",
           "decode_with_pil", "decode_example", "warn_once"]
