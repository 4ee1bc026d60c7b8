"""Helpers of the training tests: a small TrainConfig, reading a run's losses/metrics/export, and
shards whose batches differ (so batch order, dropped batches and token counts are visible)."""

from __future__ import annotations

import dataclasses
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


def train_in_worker(cfg) -> None:
    """``dist.spawn`` target: one rank's ``train(cfg)`` (module level, so that it pickles)."""
    from frozen.train.loop import train

    train(cfg)


def resume_run(cfg, kill_after: int, ckpt_at: int, total: int, checked: bool = False):
    """Train to ``kill_after`` with a checkpoint at ``ckpt_at``, lose the later state, restart to ``total``."""
    from frozen.train import checkpoint as ckpt
    from frozen.train.loop import train

    cut = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, max_steps=kill_after, ckpt_every=ckpt_at))
    train(cut, checked=checked)
    for later in range(ckpt_at + 1, kill_after + 1):
        ckpt.checkpoint_path(cut.run_dir, later).unlink(missing_ok=True)
    return train(dataclasses.replace(cut, trainer=dataclasses.replace(cut.trainer, max_steps=total)), checked=checked)


def assert_two_ranks_equal_one_process(one_dir, two_dir) -> None:
    """The 2-step runs of 1 process x 8 and 2 ranks x 4: same gradient norm and loss per step, same weights."""
    import pytest

    for key in ("grad_norm", "loss"):
        a, b = metrics(one_dir, key), metrics(two_dir, key)
        assert a.keys() == b.keys() == {1, 2}
        for step in a:
            assert b[step] == pytest.approx(a[step], rel=1e-4), f"{key} at step {step}: 1x8 {a[step]} vs 2x4 {b[step]}"
    assert_same_weights(trained_weights(one_dir), trained_weights(two_dir), rtol=1e-3, atol=2e-5)


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


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it, from /proc (torchrun and submitit start theirs in new sessions)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, todo = [], [pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids
