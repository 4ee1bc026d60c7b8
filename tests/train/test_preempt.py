"""Preemption: a signal stops the run after the current step with a checkpoint; a relaunch resumes exactly."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from trainkit import losses, make_cfg, trained_weights

from frozen.core import dist
from frozen.train import checkpoint as ckpt
from frozen.train import loop
from frozen.train.preempt import PREEMPTED_EXIT, Preempted

REPO = Path(__file__).resolve().parents[2]


def _signal_self_at(monkeypatch, call: int, sig: int) -> None:
    """The ``call``-th optimizer step sends ``sig`` to this process in its middle (numerics unchanged)."""
    real, calls = loop.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_stops_after_the_step_with_a_checkpoint_and_resume_is_exact(
    tmp_path, caption_data, tiny_gpt2, monkeypatch, sig
):
    full = make_cfg(tmp_path / "full", caption_data, tiny_gpt2, max_steps=7)
    loop.train(full)
    cfg = make_cfg(tmp_path / "cut", caption_data, tiny_gpt2, max_steps=7, ckpt_every=5)
    _signal_self_at(monkeypatch, 3, sig)
    with pytest.raises(Preempted, match=f"preempted by {signal.Signals(sig).name}: stopped after step 3 with "
                       f"checkpoint {tmp_path / 'cut' / 'checkpoints' / 'step_00000003.pt'}; relaunch the same "
                       r"command to resume from it \(exit status 75\)") as info:
        loop.train(cfg)
    assert info.value.exit_code == PREEMPTED_EXIT == 75
    assert [p.name for p in ckpt.list_checkpoints(cfg.run_dir)] == ["step_00000003.pt"]
    assert sorted(losses(cfg.run_dir)) == [1, 2, 3], "the step in flight is finished, no later one starts"
    assert signal.getsignal(sig) is signal.SIG_DFL, "the previous handler is back"
    monkeypatch.undo()
    loop.train(cfg)
    a, b = trained_weights(full.run_dir), trained_weights(cfg.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(full.run_dir) == losses(cfg.run_dir)


def test_the_handler_installed_before_runs_after_the_checkpoint(tmp_path, caption_data, tiny_gpt2, monkeypatch):
    """submitit's requeue handler (SIGUSR2) is chained: it sees the checkpoint of the step that finished."""
    cfg = make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=6)
    calls = []

    def requeue(signum, frame):
        calls.append((signum, [p.name for p in ckpt.list_checkpoints(cfg.run_dir)]))

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        _signal_self_at(monkeypatch, 2, signal.SIGUSR2)
        with pytest.raises(Preempted, match="preempted by SIGUSR2: stopped after step 2"):
            loop.train(cfg)
        assert calls == [(signal.SIGUSR2, ["step_00000002.pt"])]
        assert signal.getsignal(signal.SIGUSR2) is requeue
    finally:
        signal.signal(signal.SIGUSR2, previous)


def _preempted_worker(cfg):
    """A spawned rank: rank 1 alone receives SIGTERM during its 3rd step."""
    real = loop.train_step
    calls = []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3 and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    loop.train_step = step
    try:
        loop.train(cfg)
    except Preempted as err:
        (Path(cfg.run_dir) / f"stopped-rank{os.environ['RANK']}.txt").write_text(str(err))


def test_one_rank_signalled_stops_every_rank_after_the_same_step(tmp_path, caption_data, tiny_gpt2):

    full = dataclasses.replace(make_cfg(tmp_path / "full", caption_data, tiny_gpt2, max_steps=5), num_gpus=2)
    dist.spawn(loop.train, (full,), num_local=2)
    # The ranks agree on the flag every 2nd step: the signal of step 3 stops both after step 4.
    cut = make_cfg(tmp_path / "cut", caption_data, tiny_gpt2, max_steps=5, preempt_check_every=2)
    cfg = dataclasses.replace(cut, num_gpus=2)
    dist.spawn(_preempted_worker, (cfg,), num_local=2)
    run = tmp_path / "cut"
    assert "preempted by SIGTERM: stopped after step 4" in (run / "stopped-rank1.txt").read_text()
    assert "preempted by a signal on another rank: stopped after step 4" in (run / "stopped-rank0.txt").read_text()
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_00000004.pt"]
    dist.spawn(loop.train, (cfg,), num_local=2)
    a, b = trained_weights(full.run_dir), trained_weights(cfg.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert losses(full.run_dir) == losses(cfg.run_dir)


def test_no_preempt_signals_keeps_the_default_handlers(tmp_path, caption_data, tiny_gpt2, monkeypatch):
    seen = []
    monkeypatch.setattr(signal, "signal", lambda sig, handler: seen.append(sig))
    loop.train(make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=1, preempt_signals=[]))
    assert seen == []


def test_unknown_signal_name_is_refused():
    from frozen.config import TrainerConfig

    assert TrainerConfig.check(TrainerConfig(preempt_signals=["SIGTERM", "SIGKILL"])) == [
        "preempt_signals: unknown signal 'SIGKILL'; use names from SIGTERM, SIGUSR1, SIGUSR2, SIGINT, SIGHUP, SIGXCPU"
    ]


def _train_py(args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "HF_HUB_CACHE": str(tmp_path / "hf")}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

def _sigterm_after_step_2(proc, run: Path, timeout: float) -> tuple[int, str]:
    """SIGTERM ``proc`` once its run logged step 2; its exit must be 75 with one ``stopped:`` line: (step, stderr)."""
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and '"step": 2' in metrics.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == PREEMPTED_EXIT, err
    stopped = [line for line in err.splitlines() if line.startswith("stopped: ")]
    assert len(stopped) == 1 and "preempted by SIGTERM: stopped after step" in stopped[0], err
    return int(stopped[0].split("stopped after step ")[1].split()[0]), err



def test_sigterm_to_train_py_exits_75_and_the_relaunch_exports_the_same_bytes(tmp_path, caption_data, tiny_gpt2):
    def args(run):
        return ["experiment=debug", f"lm.name={tiny_gpt2}", f"data_root={caption_data}", f"run_dir={tmp_path / run}",
                "data.train_shards=caps/train-*.tar", "data.val_shards=caps/val-*.tar", "trainer.max_steps=40",
                "trainer.val_every=0", "trainer.ckpt_every=0", "trainer.log_every=1"]

    full = _train_py(args("full"), tmp_path)
    assert full.wait(timeout=300) == 0, full.stderr.read()
    step, _ = _sigterm_after_step_2(_train_py(args("cut"), tmp_path), tmp_path / "cut", timeout=120)
    assert 2 <= step < 40
    metrics = tmp_path / "cut" / "metrics.jsonl"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "cut")] == [f"step_{step:08d}.pt"]
    assert max(json.loads(line)["step"] for line in metrics.read_text().splitlines()) == step
    again = _train_py(args("cut"), tmp_path)
    assert again.wait(timeout=300) == 0, again.stderr.read()
    weights = "export/model.safetensors"
    assert (tmp_path / "cut" / weights).read_bytes() == (tmp_path / "full" / weights).read_bytes()


def test_sigterm_to_train_py_that_spawned_its_workers_stops_both_and_exits_75(tmp_path, caption_data, tiny_gpt2):
    """`python train.py num_gpus=2` spawns the ranks itself: the signal reaches that parent, which forwards it."""
    run = tmp_path / "spawned"
    cut = _train_py(["experiment=debug", f"lm.name={tiny_gpt2}", f"data_root={caption_data}", f"run_dir={run}",
                     "data.train_shards=caps/train-*.tar", "data.val_shards=caps/val-*.tar", "trainer.max_steps=200",
                     "trainer.val_every=0", "trainer.ckpt_every=0", "trainer.log_every=1", "num_gpus=2",
                     "trainer.batch_size=8"], tmp_path)
    step, err = _sigterm_after_step_2(cut, run, timeout=180)
    assert 2 <= step < 200 and [p.name for p in ckpt.list_checkpoints(run)] == [f"step_{step:08d}.pt"]
    assert "Traceback" not in err
