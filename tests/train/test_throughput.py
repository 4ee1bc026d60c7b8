"""The training log's throughput: images/s, real tokens/s, padding fraction and MFU over a log interval."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from trainkit import make_cfg, write_varied_shard

from frozen.data.collate import lm_positions
from frozen.data.pipeline import build_train_loader
from frozen.model.frozen_model import FrozenModel
from frozen.train.flops import analytic_step_flops, lm_matmul_params, vision_flops_per_image
from frozen.train.loop import train
from frozen.train.throughput import StepFlops, Throughput


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _batch(rows: int, width: int, text_tokens: int) -> dict:
    return {"images": torch.zeros(rows, 3, 4, 4), "input_ids": torch.zeros(rows, width, dtype=torch.long),
            "num_text_tokens": text_tokens}


def test_rates_cover_the_whole_interval_and_restart():
    clock = FakeClock()
    meter = Throughput(2, device=torch.device("cpu"), clock=clock)
    meter.add([_batch(2, 5, 7)])  # real 7 + 2*2 = 11 positions of 2 * (2 + 5) = 14
    clock.now += 0.5
    meter.add([_batch(2, 5, 9), _batch(1, 3, 3)])  # accumulation: two micro-batches, (9 + 4) / 14 and (3 + 2) / 5
    clock.now += 1.5
    assert meter.metrics() == {"img/s": 5 / 2.0, "tok/s": 19 / 2.0, "padding": pytest.approx(1 - 29 / 33)}
    meter.add([_batch(4, 2, 8)])  # a new interval: counts and clock start again
    clock.now += 4.0
    assert meter.metrics() == {"img/s": 1.0, "tok/s": 2.0, "padding": 0.0}


def test_mfu_only_with_a_peak():
    flops = StepFlops(n_lm=10, n_mapper=3, vision_flops_per_image=5, lm_weight_grads=False)
    clock = FakeClock()
    without = Throughput(2, device=torch.device("cpu"), step_flops=flops, peak_tflops=None, clock=clock)
    with_peak = Throughput(2, device=torch.device("cpu"), step_flops=flops, peak_tflops=1e-9, clock=clock)  # 1 kFLOP/s
    for meter in (without, with_peak):
        meter.add([_batch(2, 5, 7)] * 2)
    clock.now += 2.0
    assert "mfu" not in without.metrics()
    # 4 * N_lm * 28 computed positions + 3 * 5 * 4 images + 6 * 3 * 4 images = 1252 FLOPs in 2 s at 1000 FLOP/s
    assert with_peak.metrics()["mfu"] == pytest.approx(1252 / 2 / 1000)


def _records(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def test_training_log_reports_throughput_of_the_batches_it_trained_on(tmp_path, tiny_gpt2):
    write_varied_shard(tmp_path / "data" / "vary" / "train-000000.tar", 16)  # captions of 2 and 7 words: padding
    cfg = make_cfg(tmp_path / "cpu", tmp_path / "data", tiny_gpt2, max_steps=4, log_every=2, batch_size=4,
                   data={"train_shards": "vary/train-*.tar", "val_shards": None})
    train(cfg)
    model = FrozenModel(cfg.model, cfg.lm)
    loader = iter(build_train_loader(cfg.data, model.tokenizer, data_root=cfg.data_root,
                                     image_size=cfg.model.image_size, batch_size=4, seed=cfg.seed))
    batches = [next(loader) for _ in range(4)]
    rows = _records(cfg.run_dir)
    assert [r["step"] for r in rows] == [2, 4]
    for row, interval in zip(rows, (batches[:2], batches[2:])):
        images = sum(len(b["images"]) for b in interval)
        tokens = sum(b["num_text_tokens"] for b in interval)
        real, computed = (sum(v) for v in zip(*(lm_positions(b, 2) for b in interval)))
        assert 0 < real < computed, "the test batches must carry padding"
        assert row["padding"] == pytest.approx(1 - real / computed, abs=1e-12)
        assert row["tok/s"] / row["img/s"] == pytest.approx(tokens / images, rel=1e-9)
        assert "mfu" not in row, "no MFU on a CPU without a given peak"

    # With a given peak (here 1 TFLOP/s), MFU = the interval's analytic FLOPs per second over the peak.
    peaked = dataclasses.replace(cfg, run_dir=str(tmp_path / "peak"),
                                 trainer=dataclasses.replace(cfg.trainer, peak_tflops=1.0))
    train(peaked)
    per_image = vision_flops_per_image(model.vision, cfg.model.image_size, torch.device("cpu"))
    n_mapper = sum(p.numel() for p in model.mapper.parameters())
    for row, interval in zip(_records(peaked.run_dir), (batches[:2], batches[2:])):
        images = sum(len(b["images"]) for b in interval)
        computed = sum(lm_positions(b, 2)[1] for b in interval)
        flops = analytic_step_flops(lm_matmul_params(model.lm), computed, per_image * images, n_mapper, images, False)
        assert row["mfu"] / row["img/s"] == pytest.approx(flops / images / 1e12, rel=1e-9)
