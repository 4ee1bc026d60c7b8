"""The ``data_loader`` entry: samples/s of the training pipeline alone vs what the train step consumes."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from frozen.bench import lib as perf
from frozen.bench.common import median, side, target
from frozen.bench.train import train_setup
from frozen.config import DataConfig
from frozen.data.pipeline import build_train_loader
from frozen.data.shards import resolve_shards
from frozen.errors import DataError
from frozen.model.lm import load_tokenizer, resolve_lm_path


def bench_data_loader(args: argparse.Namespace, lm: str, train: dict[str, Any] | None) -> dict[str, Any]:
    cfg = DataConfig(train_shards=args.shards, num_workers=2)
    try:
        resolve_shards(cfg.train_shards, args.data_root)
    except DataError as err:
        return {"skipped": f"{err}. Run: python scripts/make_shards.py easyvqa --out {args.data_root}/easyvqa"}
    tokenizer = load_tokenizer(resolve_lm_path(lm))
    rates = [
        perf.measure_throughput(
            build_train_loader(cfg, tokenizer, data_root=args.data_root, image_size=args.image_size, batch_size=16,
                               seed=r),
            args.loader_batches,
        )
        for r in range(args.repeats)
    ]
    if train is None:  # data_loader alone: time the frozen train step here
        _, _, configure, step, _, _ = train_setup(args, lm)
        configure("frozen")
        step_s = median(perf.interleaved({"frozen": step}, args.repeats, torch.device(args.device))["frozen"])
    else:
        step_s = train["project"]["median"]
    consumed = args.train_batch / step_s
    ratio = median(rates) / consumed
    return {
        "config": {
            "shards": args.shards,
            "image_size": args.image_size,
            "batch": 16,
            "num_workers": 2,
            "timed_batches": args.loader_batches,
            "train_batch": args.train_batch,
            "train_step_s": step_s,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
        },
        "project": side("data pipeline alone (build_train_loader, 2 workers)", rates, "samples/s"),
        "baseline": {
            "what": "train step consumption (train batch / step time)",
            "median": consumed,
            "unit": "samples/s",
            "values": [consumed],
        },
        "ratio": ratio,
        "speedup": None,
        "targets": [target("throughput_ratio", ">=", 5.0, ratio)],
    }
