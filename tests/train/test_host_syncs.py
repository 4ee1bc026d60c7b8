"""The training step never waits for the device: no host read of a tensor value on a step that does not
log, one on a step that logs (frozen.train.hostsync counts them; docs/host_syncs.md)."""

from __future__ import annotations

import json

import pytest
import torch
from trainkit import make_cfg

from frozen.train.hostsync import HostReads, per_step, summarize


def test_a_step_reads_device_values_only_when_it_logs(tmp_path, caption_data, tiny_gpt2):
    from frozen.train.loop import train

    cfg = make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=7, log_every=3, fused_optimizer=True)
    with per_step() as rows:
        train(cfg)
    # Step 1 also holds the set-up; steps 3 and 6 log, and step 7, the last.
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert [r["reads"] for r in rows[1:]] == [0, 1, 0, 0, 1, 1], rows
    assert all(r["collectives"] == 0 for r in rows), "one process calls no collective"
    summary = summarize(rows, log_every=3)
    assert summary["reads_per_quiet_step"] == [(0, 3)] and summary["reads_per_logging_step"] == [(1, 3)]
    # What the host read on the logging steps is what it logs: every step's loss, as before.
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [3, 6, 7]


def test_distributed_step_reduces_on_the_device_without_reading(tiny_model, monkeypatch):
    """Under a process group the target count and the loss are all-reduced as device tensors: two
    collectives, no host read (the old step read the reduced count before the forward)."""
    from frozen.bench.lib import synthetic_caption_batch
    from frozen.core import dist
    from frozen.train.step import train_step

    monkeypatch.setattr(dist.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist.dist, "all_reduce", lambda value, op=None: value)  # one rank's sum is its value
    batch = synthetic_caption_batch(tiny_model.tokenizer, 4, 32)
    batch["images"] = (batch["images"] * 255).to(torch.uint8)  # the training loader ships bytes
    params = tiny_model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-3, fused=True)  # what the loop builds (step.adamw)
    tiny_model.train()
    with HostReads() as reads:
        result = train_step(tiny_model, optimizer, params, [batch], device=torch.device("cpu"), world_size=2)
    assert reads.total("read") == 0 and reads.total("collective") == 2, reads.counts
    assert not bool(result.nonfinite) and torch.isfinite(result.loss)


@pytest.mark.parametrize("bad", ["loss", "grad"])
def test_nonfinite_step_is_skipped_on_the_device(tiny_model, bad):
    """The optimizer leaves weights, moments and its step count as they were, without the host reading the flag."""
    from frozen.bench.lib import synthetic_caption_batch
    from frozen.train.step import train_step

    batch = synthetic_caption_batch(tiny_model.tokenizer, 4, 32)
    batch["images"] = (batch["images"] * 255).to(torch.uint8)
    params = tiny_model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-3, fused=True)  # what the loop builds (step.adamw)
    tiny_model.train()
    cpu = torch.device("cpu")
    train_step(tiny_model, optimizer, params, [batch], device=cpu)  # a good step: the optimizer has state
    weights = [p.detach().clone() for p in params]
    state = {k: v.clone() for k, v in optimizer.state[params[0]].items()}
    forward = type(tiny_model).forward

    def poisoned(model, *args, **kwargs):
        out = forward(model, *args, **kwargs)
        out.loss = out.loss * float("nan") if bad == "loss" else out.loss + 0 * params[0].sum() * float("inf")
        return out

    type(tiny_model).forward = poisoned
    try:
        with HostReads() as reads:
            result = train_step(tiny_model, optimizer, params, [batch], device=cpu, grad_clip=1.0)
    finally:
        type(tiny_model).forward = forward
    assert reads.total("read") == 0
    assert bool(result.nonfinite)
    assert all(torch.equal(w, p) for w, p in zip(weights, params))
    assert all(torch.equal(v, optimizer.state[params[0]][k]) for k, v in state.items())


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_deferred_reads_log_and_skip_what_reading_every_step_does(tmp_path, caption_data, tiny_gpt2, monkeypatch):
    """Reading every 3rd step skips the same step, logs the same losses and a line for the skipped step, and
    ends with the same weights as reading after every step."""
    from test_train import _nan_on_calls
    from trainkit import trained_weights

    from frozen.model.frozen_model import FrozenModel
    from frozen.train.loop import train

    forward = FrozenModel.forward
    monkeypatch.setattr(FrozenModel, "forward", _nan_on_calls(forward, {2}))
    every = train(make_cfg(tmp_path / "every", caption_data, tiny_gpt2, max_steps=6, log_every=1, fused_optimizer=True))
    monkeypatch.setattr(FrozenModel, "forward", _nan_on_calls(forward, {2}))
    deferred = train(make_cfg(tmp_path / "deferred", caption_data, tiny_gpt2, max_steps=6, log_every=3,
                                  fused_optimizer=True))
    a, b = _records(tmp_path / "every"), _records(tmp_path / "deferred")
    assert [r["step"] for r in b] == [2, 3, 6], "the skipped step gets its line, at the next read"
    by_step = {r["step"]: r for r in a}
    for r in b:
        assert r["loss"] == by_step[r["step"]]["loss"] or (r["loss"] != r["loss"] and r["step"] == 2)
        assert r["nonfinite_steps"] == by_step[r["step"]]["nonfinite_steps"]
    assert every["nonfinite_steps"] == deferred["nonfinite_steps"] == 1 and every["loss"] == deferred["loss"]
    wa, wb = trained_weights(tmp_path / "every"), trained_weights(tmp_path / "deferred")
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


def test_too_many_skipped_steps_stop_at_the_next_logging_step(tmp_path, caption_data, tiny_gpt2, monkeypatch):
    from test_train import _nan_on_calls

    from frozen.model.frozen_model import FrozenModel
    from frozen.train.loop import NonFiniteLossError, train

    monkeypatch.setattr(FrozenModel, "forward", _nan_on_calls(FrozenModel.forward, {"all"}))
    cfg = make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=10, max_nonfinite=3, log_every=5,
                   fused_optimizer=True)
    with pytest.raises(NonFiniteLossError, match=r"5 consecutive steps .*last at step 5\); checkpoint saved"):
        train(cfg)
    assert [r["nonfinite_steps"] for r in _records(tmp_path / "run")] == [1, 2, 3, 4, 5]
    assert (tmp_path / "run" / "checkpoints" / "step_00000004.pt").is_file()  # the weights of step 4, as before


def test_hostsync_command_counts_a_run_and_the_emulated_waits(tmp_path, caption_data, tiny_gpt2, capsys):
    """What scripts/gpu_check.sh runs: the same Hydra overrides as train.py; --emulate-old-syncs adds the two
    waits per step that the step made before, so one machine times both."""
    from frozen.train import hostsync

    def run(name, *flags):
        return hostsync.main([*flags, "experiment=debug", f"lm.name={tiny_gpt2}", f"data_root={caption_data}",
                              f"run_dir={tmp_path / name}", "data.train_shards=caps/train-*.tar",
                              "data.val_shards=caps/val-*.tar", "trainer.max_steps=6", "trainer.val_every=0",
                              "trainer.ckpt_every=0", "trainer.log_every=3", "trainer.device=cpu",
                              "trainer.fused_optimizer=true",
                              "--out", str(tmp_path / f"{name}.json")])

    now, old = run("now"), run("old", "--emulate-old-syncs")
    assert now["reads_per_quiet_step"] == [(0, 3)] and now["reads_per_logging_step"] == [(1, 2)]
    assert old["reads_per_quiet_step"] == [(2, 3)] and old["reads_per_logging_step"] == [(3, 2)]
    assert now["seconds_per_step"] > 0 and json.loads((tmp_path / "now.json").read_text())["steps"] == 6


def test_collators_count_the_targets_the_loss_divides_by(tiny_model):
    """num_targets (a Python int from the token lists) is the labels' count of non-ignored positions, padded
    and packed, prompts and truncation included: the step no longer counts them on a tensor."""
    from frozen.data.collate import Collator
    from frozen.data.packing import PackedCollator
    from frozen.data.samples import Example

    examples = [Example(key=f"k{i}", kind="vqa" if i % 2 else "caption", prompt="Q: what? A:" if i % 2 else "",
                        target=" a red circle" * (i + 1), meta={}, image=torch.zeros(3, 32, 32, dtype=torch.uint8))
                for i in range(5)]
    for collate in (Collator(tiny_model.tokenizer, 12), PackedCollator(tiny_model.tokenizer, 12, 2)):
        batch = collate(examples)
        assert isinstance(batch["num_targets"], int) and batch["num_targets"] > 0
        assert batch["num_targets"] == int((batch["labels"] != -100).sum())


def test_fused_optimizer_defaults_to_accelerators_and_is_refused_where_torch_has_none(monkeypatch):
    """null: unfused on CPU (a read waits for nothing there, and the unfused kernel keeps CPU results bit for
    bit: fused AdamW rounds differently), fused where the host must run ahead of a device."""
    from frozen.train import step

    cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert not step.supports_found_inf(step.adamw(cpu))
    assert step.supports_found_inf(step.adamw(cpu, fused=True))
    assert not step.supports_found_inf(step.adamw(cpu, fused=False))
    meta = [torch.nn.Parameter(torch.zeros(3, device="meta"))]  # an accelerator stand-in: not CPU
    monkeypatch.setattr(step, "_get_fused_kernels_supported_devices", lambda: ["cpu", "meta"])
    assert step.supports_found_inf(step.adamw(meta))
    monkeypatch.setattr(step, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    with pytest.raises(ValueError, match="no fused AdamW for \\['cpu'\\]"):
        step.adamw(cpu, fused=True)
