"""The training loop on CPU: tiny LM + small CNN + generated shards."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainkit import losses, make_cfg, train_in_worker, trained_weights

from frozen.config import LoggerConfig, TrainConfig, TrainerConfig
from frozen.errors import FrozenConfigError

REPO = Path(__file__).resolve().parents[2]


def test_short_run_lowers_loss_checkpoints_and_exports(tmp_path, caption_data, tiny_gpt2):
    from frozen import FrozenModel
    from frozen.train.loop import train

    cfg = make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=30, ckpt_every=10, keep_last=2, val_every=15)
    result = train(cfg)
    curve = losses(cfg.run_dir)
    assert len(curve) == 30
    first, last = curve[1], sum(curve[s] for s in range(26, 31)) / 5
    assert last < first - 1.0, f"loss did not go down: {first:.3f} -> {last:.3f}"
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step_00000020.pt", "step_00000020.pt.sha256", "step_00000030.pt", "step_00000030.pt.sha256"], (
        "keep_last=2 keeps the newest two, each with its checksum"
    )
    assert result["step"] == 30 and "val/loss" in result
    restored = FrozenModel.from_pretrained(result["export"])
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000030.pt", weights_only=True)["model"]
    for name, tensor in restored.trainable_state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, caption_data, tiny_gpt2):
    from frozen.train.loop import train

    full = make_cfg(tmp_path / "full", caption_data, tiny_gpt2, max_steps=8)
    train(full)

    # A run that checkpointed at step 3 and was killed after step 5 (its later state is lost).
    cut = make_cfg(tmp_path / "cut", caption_data, tiny_gpt2, max_steps=5, ckpt_every=3)
    train(cut)
    (tmp_path / "cut" / "checkpoints" / "step_00000005.pt").unlink()
    # Restarted in the same directory, with the full length: resumes from step 3 automatically.
    train(dataclasses.replace(cut, trainer=dataclasses.replace(cut.trainer, max_steps=8)))

    a, b = trained_weights(full.run_dir), trained_weights(cut.run_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"
    assert losses(full.run_dir) == losses(cut.run_dir)


def test_load_path_resumes_into_a_new_directory(tmp_path, caption_data, tiny_gpt2):
    from frozen.train.loop import train

    first = make_cfg(tmp_path / "a", caption_data, tiny_gpt2, max_steps=3)
    train(first)
    second = dataclasses.replace(
        make_cfg(tmp_path / "b", caption_data, tiny_gpt2, max_steps=5), load_path=str(tmp_path / "a")
    )
    train(second)
    assert sorted(losses(second.run_dir)) == [4, 5]


def test_resume_with_another_model_config_fails(tmp_path, caption_data, tiny_gpt2):
    from frozen.train.loop import train

    cfg = make_cfg(tmp_path / "a", caption_data, tiny_gpt2, max_steps=2)
    train(cfg)
    other = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, num_prefix_tokens=3),
        trainer=dataclasses.replace(cfg.trainer, max_steps=4),
    )
    with pytest.raises(FrozenConfigError, match=r"\(saved -> now\): model.num_prefix_tokens 2 -> 3; resume with"):
        train(other)



def test_two_gloo_processes_match_one_process_with_twice_the_batch(tmp_path, caption_data, tiny_gpt2):
    from frozen.core import dist
    from frozen.train.loop import train

    one = make_cfg(tmp_path / "one", caption_data, tiny_gpt2, max_steps=3, batch_size=8, lr=1e-3)
    train(one)
    two = dataclasses.replace(
        make_cfg(tmp_path / "two", caption_data, tiny_gpt2, max_steps=3, batch_size=8, lr=1e-3),
        num_gpus=2,
        per_gpu_batchsize=4,
    )
    dist.spawn(train_in_worker, (two,), num_local=2)
    a, b = trained_weights(one.run_dir), trained_weights(two.run_dir)
    # Equal up to float summation order: Adam's normalisation turns ~1e-8 gradient noise into weight
    # differences of ~0.4% of lr (here ~4e-6); a wrong loss scale or batch would differ by ~lr (1e-3).
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=2e-5, msg=f"{name} differs between 1x8 and 2x4")
    for step, loss in losses(one.run_dir).items():
        assert losses(two.run_dir)[step] == pytest.approx(loss, rel=1e-5)


def test_gradient_accumulation_matches_one_big_batch(tmp_path, caption_data, tiny_gpt2):
    from frozen.train.loop import train

    big = make_cfg(tmp_path / "big", caption_data, tiny_gpt2, max_steps=3, batch_size=8, lr=1e-3)
    acc = dataclasses.replace(
        make_cfg(tmp_path / "acc", caption_data, tiny_gpt2, max_steps=3, batch_size=8, lr=1e-3), per_gpu_batchsize=4
    )
    train(big)
    train(acc)
    a, b = trained_weights(big.run_dir), trained_weights(acc.run_dir)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=2e-5)


def _nan_on_calls(forward, bad):
    """Wrap FrozenModel.forward so that the loss is NaN on the listed calls (1-based; "all": always)."""
    calls = {"n": 0}

    def wrapped(model, *args, **kwargs):
        out = forward(model, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] in bad or "all" in bad:
            out.loss = out.loss * float("nan")
        return out

    return wrapped


def test_nonfinite_step_is_skipped_and_counted(tmp_path, caption_data, tiny_gpt2, monkeypatch):
    from frozen.model.frozen_model import FrozenModel
    from frozen.train.loop import train

    monkeypatch.setattr(FrozenModel, "forward", _nan_on_calls(FrozenModel.forward, {3}))
    result = train(make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=5))
    assert result["nonfinite_steps"] == 1
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["nonfinite_steps"] == 1 and all(
        torch.isfinite(p).all() for p in trained_weights(tmp_path / "run").values()
    )


def test_too_many_nonfinite_steps_stop_with_a_checkpoint(tmp_path, caption_data, tiny_gpt2, monkeypatch):
    from frozen.model.frozen_model import FrozenModel
    from frozen.train.loop import NonFiniteLossError, train

    monkeypatch.setattr(FrozenModel, "forward", _nan_on_calls(FrozenModel.forward, {"all"}))
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps had a non-finite loss.*checkpoint saved"):
        train(make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=10, max_nonfinite=3))
    assert (tmp_path / "run" / "checkpoints" / "step_00000002.pt").is_file()


def test_lr_schedules():
    from frozen.train.loop import lr_at

    cfg = TrainConfig(trainer=TrainerConfig(lr=1.0, warmup_steps=4, max_steps=14, schedule="cosine", min_lr_ratio=0.1))
    assert [lr_at(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert (
        lr_at(4, cfg) == pytest.approx(1.0)
        and lr_at(9, cfg) == pytest.approx(0.55)
        and lr_at(14, cfg) == pytest.approx(0.1)
    )
    const = TrainConfig(trainer=TrainerConfig(lr=3e-4, schedule="constant"))
    assert lr_at(0, const) == lr_at(10_000, const) == 3e-4


def test_batch_split_validation():
    from frozen.config import accumulation_steps

    cfg = TrainConfig(trainer=TrainerConfig(batch_size=128), per_gpu_batchsize=16)
    assert accumulation_steps(cfg, 4) == (16, 2)
    assert accumulation_steps(dataclasses.replace(cfg, per_gpu_batchsize=None), 4) == (32, 1)
    with pytest.raises(FrozenConfigError, match="multiple of per_gpu_batchsize"):
        accumulation_steps(dataclasses.replace(cfg, per_gpu_batchsize=48), 1)


# ------------------------------------------------------------------------------ the CLI (Hydra)
def _cli(*args, cwd=REPO, timeout=300):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=vit_huge", "Could not find 'model/vit_huge'"),
        ("trainer.lr=fast", "Value 'fast' of type 'str' could not be converted to Float"),
        ("trainer.learning_rate=1e-3", "Key 'learning_rate' not in 'TrainerConfig'"),
        ("trainer.precision=fp8", "trainer.precision must be auto, bf16, fp16 or fp32, got 'fp8'"),
        ("per_gpu_batchsize=3", "must be a multiple of per_gpu_batchsize"),
    ],
)
def test_bad_overrides_fail_fast_with_their_message(override, message, tmp_path):
    proc = _cli("train.py", "experiment=debug", f"run_dir={tmp_path}", override)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout


def test_multirun_sweep_of_two_jobs(tmp_path, caption_data, tiny_gpt2):
    proc = _cli(
        "train.py",
        "-m",
        "experiment=debug",
        f"lm.name={tiny_gpt2}",
        f"data_root={caption_data}",
        "data.train_shards=caps/train-*.tar",
        "data.val_shards=caps/val-*.tar",
        "trainer.max_steps=2",
        "trainer.val_every=0",
        "trainer.lr=1e-3,1e-2",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").iterdir())
    jobs = [j for j in jobs if j.is_dir() and (j / "export").is_dir()]
    assert len(jobs) == 2
    assert {json.loads((j / "metrics.jsonl").read_text().splitlines()[-1])["lr"] for j in jobs} == {1e-3, 1e-2}


def test_activation_checkpointing_gives_the_same_training(tmp_path, caption_data, tiny_gpt2):
    from frozen.train.loop import train

    plain = make_cfg(tmp_path / "plain", caption_data, tiny_gpt2, max_steps=2)
    ckpt = make_cfg(tmp_path / "ckpt", caption_data, tiny_gpt2, max_steps=2, activation_checkpointing=True)
    train(plain)
    train(ckpt)
    a, b = trained_weights(plain.run_dir), trained_weights(ckpt.run_dir)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7)


def test_wandb_mode_without_a_key_is_offline(monkeypatch, tmp_path):
    from frozen.core.logging import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    assert wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("online") == "disabled"


def test_wandb_offline_run_is_written_and_finished(tmp_path, caption_data, tiny_gpt2, monkeypatch):
    from frozen.train.loop import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=2, val_every=2)
    cfg = dataclasses.replace(cfg, logger=LoggerConfig(backend="wandb", project="frozen-test"))
    train(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), "an offline W&B run with its data file"
    import wandb

    assert wandb.run is None, "the run must be finished (Hydra multirun starts the next one)"


def test_init_from_an_export_starts_from_its_weights(tmp_path, caption_data, tiny_gpt2):
    from frozen.errors import FrozenConfigError
    from frozen.train.loop import train

    first = make_cfg(tmp_path / "first", caption_data, tiny_gpt2, max_steps=3)
    train(first)
    # A tiny learning rate: the fine-tuned weights stay those of the export, not a fresh init.
    tuned = dataclasses.replace(
        make_cfg(tmp_path / "tuned", caption_data, tiny_gpt2, max_steps=2, lr=1e-12), init_from=str(tmp_path / "first")
    )
    train(tuned)
    a, b = trained_weights(first.run_dir), trained_weights(tuned.run_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=1e-6)
    fresh = make_cfg(tmp_path / "fresh", caption_data, tiny_gpt2, max_steps=2, lr=1e-12)
    train(fresh)
    assert any((trained_weights(fresh.run_dir)[n] - a[n]).abs().max() > 1e-3 for n in a)
    assert sorted(losses(tuned.run_dir)) == [1, 2]  # step count starts at 0
    other = dataclasses.replace(
        tuned, run_dir=str(tmp_path / "other"), model=dataclasses.replace(tuned.model, num_prefix_tokens=3)
    )
    with pytest.raises(FrozenConfigError, match="num_prefix_tokens"):
        train(other)
