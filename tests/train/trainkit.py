"""Helpers of the training tests: a small TrainConfig, reading a run's losses/metrics/export, and
shards whose batches differ (so batch order, dropped batches and token counts are visible)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from frozen.config import DataConfig, LMConfig, LoggerConfig, ModelConfig, TrainConfig, TrainerConfig

PNG_THAT_DOES_NOT_DECODE = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64 + b"IEND\xaeB`\x82"  # passes the byte checks


def make_cfg(run_dir, data_root, lm_dir, *, data: dict | None = None, lm: dict | None = None, **trainer) -> TrainConfig:
    t = dict(
        max_steps=6,
        batch_size=8,
        lr=1e-2,
        precision="fp32",
        device="cpu",
        log_every=1,
        val_every=0,
        ckpt_every=0,
        keep_last=10,
        num_sample_captions=2,
        val_batches=2,
    )
    t.update(trainer)
    d = dict(
        train_shards="caps/train-*.tar",
        val_shards="caps/val-*.tar",
        num_workers=0,
        shuffle_buffer=0,
        max_length=16,
    )
    d.update(data or {})
    return TrainConfig(
        model=ModelConfig(vision="tiny_cnn", image_size=32, num_prefix_tokens=2),
        lm=LMConfig(name=str(lm_dir), **(lm or {})),
        data=DataConfig(**d),
        trainer=TrainerConfig(**t),
        logger=LoggerConfig(backend="none"),
        data_root=str(data_root),
        run_dir=str(run_dir),
        seed=0,
    )


def metrics(run_dir, key: str = "loss") -> dict[int, float]:
    """step -> ``key`` from metrics.jsonl; a re-run step keeps its last value."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if key in record:
            out[record["step"]] = record[key]
    return out


def losses(run_dir) -> dict[int, float]:
    return metrics(run_dir, "loss")


def trained_weights(run_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "export" / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if tol:
            torch.testing.assert_close(a[name], b[name], **tol, msg=lambda m: f"{name}: {m}")
        else:
            assert torch.equal(a[name], b[name]), f"{name} differs"


WORDS = ("red", "green", "blue", "yellow", "teal", "brown", "gray", "black")


def write_varied_shard(path: Path, num_samples: int, *, bad: dict[int, str] | None = None, size: int = 32) -> Path:
    """Samples that all differ: sample i is a square of its own colour and place; its caption has
    2 words for even i and 7 for odd i (unequal token counts between ranks that take alternate
    samples). ``bad`` maps an index to ``"missing_caption"`` (no text) or ``"corrupt_image"``
    (bytes that pass the cheap checks but fail to decode)."""
    import webdataset as wds
    from PIL import Image, ImageDraw

    bad = bad or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for i in range(num_samples):
            img = Image.new("RGB", (size, size), (i * 37 % 256, i * 91 % 256, i * 53 % 256))
            x = 2 + (i * 5) % (size - 12)
            ImageDraw.Draw(img).rectangle((x, x // 2, x + 10, x // 2 + 10), fill=(255 - i * 13 % 256, 40, i * 29 % 256))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            word = WORDS[i % len(WORDS)]
            caption = f"a {word}" if i % 2 == 0 else f"a {word} circle on the {WORDS[(i * 3) % 8]} rectangle"
            sample = {"__key__": f"{path.stem}-s{i:05d}", "png": buf.getvalue(), "txt": caption}
            if bad.get(i) == "missing_caption":
                del sample["txt"]
            elif bad.get(i) == "corrupt_image":
                sample["png"] = PNG_THAT_DOES_NOT_DECODE
            sink.write(sample)
    return path
