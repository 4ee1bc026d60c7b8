"""validation.json: what a training run leaves for ``make compare`` (its last validation pass)."""

from __future__ import annotations

import json
import math

from trainkit import make_cfg, metrics
from transformers import AutoModelForCausalLM

from frozen.train.loop import train


def test_the_last_validation_pass_is_recorded_with_its_batches(tmp_path, caption_data, tiny_gpt2):
    cfg = make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=2, val_every=1, val_batches=2)
    cfg.per_gpu_batchsize = 4
    out = train(cfg)
    record = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert record["step"] == 2
    (row,) = record["rows"]
    assert (row["task"], row["metric"], row["condition"]) == ("validation", "caption_loss", "image")
    assert row["mean"] == out["val/loss"] == metrics(tmp_path / "run", "val/loss")[2]
    losses = row["batch_losses"]
    assert len(losses) == 2 and min(losses) <= row["mean"] <= max(losses)
    assert math.isclose(row["stddev"], abs(losses[0] - losses[1]) / math.sqrt(2), rel_tol=1e-9)
    assert record["protocol"] == {"validation": {
        "val_shards": "caps/val-*.tar", "val_batches": 2, "batch_size": 4, "batches_scored": 2,
        "caption_template": " {caption}", "max_length": 16}}
    lm = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    assert record["lm_num_parameters"] == sum(p.numel() for p in lm.parameters())
