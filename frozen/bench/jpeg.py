"""The ``jpeg_decode`` entry: images/s of one loader worker making 224-px training batches from 640 x 480 JPEG
shards, reduced-scale decode (``data.jpeg_draft=true``) vs full decode (both libjpeg-turbo through
:func:`frozen.data.samples.decode_image`; PIL's full decode, the same pixels, is timed beside them in
``decode_only``); and the real photos it (and the tests)
use: scikit-image's bundled photographs, centre-cropped to 4:3, resized to 640 x 480 and saved as JPEG at
quality 90 (COCO's images are JPEGs of about 640 x 480 at a similar quality)."""

from __future__ import annotations

import argparse
import io
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import skimage
import torch
from PIL import Image

from frozen import scaling
from frozen.bench.common import median, side, target
from frozen.config import DataConfig
from frozen.data.pipeline import build_train_loader
from frozen.data.samples import decode_image, decode_with_pil
from frozen.model.lm import load_tokenizer, resolve_lm_path
from frozen.model.vision import image_transform
from frozen.prep.shards import ShardSink

# scikit-image's bundled photographs (skimage/data; the synthetic test images -- chessboards, logo, phantom,
# horse silhouette -- are left out). Grayscale ones become gray RGB.
PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "clock_motion", "coffee", "coins", "grass", "gravel",
          "hubble_deep_field", "ihc", "moon", "motorcycle_left", "motorcycle_right", "page", "retina", "rocket", "text")
STORED, QUALITY, SIZE, BATCH = (640, 480), 90, 224, 16


def photo(name: str, size: tuple[int, int] = STORED) -> Image.Image:
    """One of :data:`PHOTOS` as RGB, centre-cropped to the aspect of ``size`` and resized (Lanczos) to it."""
    folder = Path(skimage.__file__).parent / "data"
    path = next(p for p in (folder / f"{name}.png", folder / f"{name}.jpg") if p.is_file())
    with Image.open(path) as image:
        image = image.convert("RGB")
    w, h = image.size
    cw, ch = min(w, h * size[0] // size[1]), min(h, w * size[1] // size[0])
    box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
    return image.resize(size, Image.Resampling.LANCZOS, box=box)


def photo_jpegs(size: tuple[int, int] = STORED, quality: int = QUALITY) -> dict[str, bytes]:
    """Every photo of :data:`PHOTOS` as JPEG bytes of ``size`` at ``quality``."""
    out = {}
    for name in PHOTOS:
        buf = io.BytesIO()
        photo(name, size).save(buf, "JPEG", quality=quality)
        out[name] = buf.getvalue()
    return out


def write_photo_shards(root: Path, jpegs: dict[str, bytes], copies: int, prefix: str = "photos") -> str:
    """``copies`` shards under ``root``, each holding every photo once (jpg + caption); returns their pattern."""
    with ShardSink(root, prefix, max_count=len(jpegs)) as sink:
        for copy in range(copies):
            for name, data in jpegs.items():
                sink.write(f"{name}_{copy}", {"jpg": data, "txt": f"a photograph ({name.replace('_', ' ')})"})
    return f"{prefix}-*.tar"


def pixel_difference(jpegs: dict[str, bytes], size: int = SIZE) -> dict[str, float]:
    """Reduced-scale vs full decode after the pad-and-resize, in 0-255 units over all photos: mean and max
    absolute difference and PSNR (dB, from the mean squared difference)."""
    transform = image_transform(size)
    diffs = [(transform(decode_image(d, size)) - transform(decode_image(d))).mul_(255.0) for d in jpegs.values()]
    every = torch.cat([d.flatten() for d in diffs])
    mse = float(every.pow(2).mean())
    return {"mean_abs": float(every.abs().mean()), "max_abs": float(every.abs().max()),
            "psnr_db": 10 * math.log10(255.0**2 / mse) if mse else math.inf, "photos": len(diffs)}


def workers_needed(rates: dict[str, float]) -> dict[str, Any]:
    """Loader workers per GPU that docs/scaling.md's step rate needs (7B LM, ddp, ``frozen.scaling``'s
    batch and GPUs), at each side's images/s."""
    step_s = scaling.plan(scaling.LMS[0], *scaling.measure_vision())["ddp"]["step_s"]
    per_gpu = scaling.BATCH / scaling.GPUS / step_s
    return {"lm": scaling.LMS[0].name, "step_s": step_s, "images_per_s_per_node": scaling.BATCH / step_s,
            "images_per_s_per_gpu": per_gpu, **{name: math.ceil(per_gpu / rate) for name, rate in rates.items()}}


def loader_rate(tokenizer: Any, root: str, pattern: str, draft: bool, batches: int, seed: int
                ) -> tuple[float, float]:
    """Images per CPU second and per wall-clock second of the training stream in this process (num_workers=0:
    the work of one DataLoader worker), over ``batches`` batches after 2 untimed ones."""
    cfg = DataConfig(train_shards=pattern, num_workers=0, shuffle_buffer=0, jpeg_draft=draft)
    loader = iter(build_train_loader(cfg, tokenizer, data_root=root, image_size=SIZE, batch_size=BATCH, seed=seed))
    for _ in range(2):
        next(loader)
    images, cpu, wall = 0, time.process_time(), time.perf_counter()
    for _ in range(batches):
        batch = next(loader)
        assert batch["images"].shape[1:] == (3, SIZE, SIZE)
        images += len(batch["keys"])
    return images / (time.process_time() - cpu), images / (time.perf_counter() - wall)


def decode_rate(jpegs: dict[str, bytes], side: str, passes: int = 3) -> float:
    """Images per CPU second of decode + pad-and-resize alone (no tar reading, tokenising or collating); ``side``
    "draft" (reduced scale), "full" (libjpeg-turbo, full scale) or "pil" (PIL, full scale)."""
    transform = image_transform(SIZE)
    decode = {"draft": lambda d: decode_image(d, SIZE), "full": decode_image, "pil": decode_with_pil}[side]
    start = time.process_time()
    for _ in range(passes):
        for data in jpegs.values():
            transform(decode(data))
    return passes * len(jpegs) / (time.process_time() - start)


def bench_jpeg_decode(args: argparse.Namespace, lm: str) -> dict[str, Any]:
    jpegs = photo_jpegs()
    tokenizer = load_tokenizer(resolve_lm_path(lm))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a DataLoader worker runs with
    cpu: dict[str, list[float]] = {"draft": [], "full": []}
    wall: dict[str, list[float]] = {"draft": [], "full": []}
    decode: dict[str, list[float]] = {"draft": [], "full": [], "pil": []}
    try:
        with tempfile.TemporaryDirectory(prefix="frozen-jpeg-") as tmp:
            pattern = write_photo_shards(Path(tmp), jpegs, copies=4)
            for repeat in range(args.repeats):  # the two sides interleaved, so other load hits both alike
                for name in cpu:
                    c, w = loader_rate(tokenizer, tmp, pattern, name == "draft", args.jpeg_batches, repeat)
                    cpu[name].append(c)
                    wall[name].append(w)
                    decode[name].append(decode_rate(jpegs, name))
                decode["pil"].append(decode_rate(jpegs, "pil"))
    finally:
        torch.set_num_threads(threads)
    speedup = median(cpu["draft"]) / median(cpu["full"])
    return {
        "config": {"photos": len(jpegs), "stored": list(STORED), "quality": QUALITY, "image_size": SIZE,
                   "batch": BATCH, "samples": 4 * len(jpegs), "timed_batches": args.jpeg_batches,
                   "num_workers": 0, "torch_threads": 1, "repeats": args.repeats, "clock": "process CPU time",
                   "mean_jpeg_bytes": float(np.mean([len(d) for d in jpegs.values()]))},
        "project": side("reduced-scale decode (data.jpeg_draft=true), 1 worker", cpu["draft"], "images/s"),
        "baseline": side("full decode (data.jpeg_draft=false), 1 worker", cpu["full"], "images/s"),
        "ratio": 1 / speedup,
        "speedup": speedup,
        "wall_clock": {name: side(f"{name}, images per wall-clock second", r, "images/s") for name, r in wall.items()},
        "decode_only": {"draft": median(decode["draft"]), "full": median(decode["full"]),
                        "pil_full": median(decode["pil"]), "speedup": median(decode["draft"]) / median(decode["full"]),
                        "full_vs_pil": median(decode["full"]) / median(decode["pil"]), "unit": "images/s (CPU)"},
        "pixels": pixel_difference(jpegs),
        "workers_per_gpu": workers_needed({name: median(r) for name, r in cpu.items()}),
        "targets": [target("speedup", ">=", 2.0, speedup)],
    }
