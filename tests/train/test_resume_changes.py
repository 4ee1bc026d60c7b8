"""Resuming with changed settings: what breaks exact resume is refused (all at once), the rest is recorded."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from trainkit import losses, make_cfg, trained_weights

from frozen.errors import FrozenConfigError
from frozen.train.loop import train


def _with(cfg, **trainer):
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, **trainer))


def test_changes_that_break_exact_resume_are_refused_together(tmp_path, caption_data, tiny_gpt2):
    cfg = make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=2)
    train(cfg)
    other = dataclasses.replace(
        _with(cfg, max_steps=4, batch_size=4, lr=5e-3),
        seed=1,
        model=dataclasses.replace(cfg.model, num_prefix_tokens=3),
        data=dataclasses.replace(cfg.data, shuffle_buffer=4),
    )
    with pytest.raises(FrozenConfigError) as info:
        train(other)
    message = str(info.value)
    assert message == (
        f"cannot resume from {tmp_path / 'run' / 'checkpoints' / 'step_00000002.pt'}: 4 setting(s) that fix the "
        "model or the batch order differ from the checkpoint (saved -> now): data.shuffle_buffer 0 -> 4, "
        "model.num_prefix_tokens 2 -> 3, seed 0 -> 1, trainer.batch_size 8 -> 4; resume with the saved values, "
        "or start a new run_dir (init_from=<its export> starts from the trained weights)"
    )
    assert not (tmp_path / "run" / "resume_changes.jsonl").exists()


def test_changes_that_keep_resume_exact_are_logged_and_recorded(tmp_path, caption_data, tiny_gpt2, capsys):
    full = make_cfg(tmp_path / "full", caption_data, tiny_gpt2, max_steps=3)
    train(full)
    train(_with(full, max_steps=6, lr=2e-3, log_every=2))  # continues the finished run: 3 more steps

    cut = make_cfg(tmp_path / "cut", caption_data, tiny_gpt2, max_steps=3)
    train(cut)
    capsys.readouterr()
    train(_with(cut, max_steps=6, lr=2e-3, log_every=2))
    err = " ".join(capsys.readouterr().err.split())
    assert "with changed settings: trainer.log_every 1 -> 2, trainer.lr 0.01 -> 0.002, trainer.max_steps 3 -> 6" in err
    records = [json.loads(line) for line in (tmp_path / "cut" / "resume_changes.jsonl").read_text().splitlines()]
    assert records == [{
        "step": 3,
        "checkpoint": str(tmp_path / "cut" / "checkpoints" / "step_00000003.pt"),
        "changes": {"trainer.log_every": [1, 2], "trainer.lr": [0.01, 0.002], "trainer.max_steps": [3, 6]},
    }]
    a, b = trained_weights(full.run_dir), trained_weights(cut.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert losses(full.run_dir) == losses(cut.run_dir)
