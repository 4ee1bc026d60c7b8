"""Checkpoints a resume can trust: checksums, damaged files moved aside, full or read-only disks."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
from pathlib import Path

import pytest
import torch
from trainkit import losses, make_cfg, trained_weights

from frozen.errors import WriteError
from frozen.train import checkpoint as ckpt


def _longer(cfg, max_steps):
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, max_steps=max_steps))


def test_checkpoint_has_a_checksum_beside_it(tmp_path):
    path = ckpt.save(ckpt.checkpoint_path(tmp_path, 3), {"step": 3, "model": {"w": torch.ones(2)}})
    sidecar = path.with_name("step_00000003.pt.sha256")
    assert sidecar.read_text() == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  step_00000003.pt\n"
    assert ckpt.verified_load(path)["step"] == 3
    assert [p.name for p in path.parent.iterdir()] == sorted(["step_00000003.pt", "step_00000003.pt.sha256"])


def test_truncated_newest_checkpoint_is_moved_aside_and_the_older_one_resumes(
    tmp_path, caption_data, tiny_gpt2, capsys
):
    from frozen.train.loop import train

    full = make_cfg(tmp_path / "full", caption_data, tiny_gpt2, max_steps=8)
    train(full)
    cut = make_cfg(tmp_path / "cut", caption_data, tiny_gpt2, max_steps=5, ckpt_every=3)
    train(cut)
    newest = tmp_path / "cut" / "checkpoints" / "step_00000005.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a write cut short (no checksum could save this one)
    capsys.readouterr()
    train(_longer(cut, 8))
    out = " ".join(capsys.readouterr().err.split())
    assert f"checkpoint {newest} is damaged" in out and "moved aside to step_00000005.pt.damaged" in out
    assert "resumed from" in out and "step_00000003.pt at step 3" in out
    aside = newest.with_name("step_00000005.pt.damaged")
    assert aside.read_bytes() == data[: len(data) // 2], "the damaged file is kept, never deleted"
    assert newest.with_name("step_00000005.pt.damaged.sha256").is_file()
    a, b = trained_weights(full.run_dir), trained_weights(cut.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(full.run_dir) == losses(cut.run_dir)


def test_bit_flip_is_caught_by_the_checksum(tmp_path):
    older = ckpt.save(ckpt.checkpoint_path(tmp_path, 1), {"step": 1, "model": {"w": torch.zeros(64)}})
    newest = ckpt.save(ckpt.checkpoint_path(tmp_path, 2), {"step": 2, "model": {"w": torch.ones(64)}})
    raw = bytearray(newest.read_bytes())
    i = raw.index(torch.ones(64).numpy().tobytes()) + 5  # inside the tensor data: torch.load alone would not see it
    raw[i] ^= 0xFF
    newest.write_bytes(bytes(raw))
    lines = []
    path, state = ckpt.newest_intact(tmp_path, lines.append)
    assert path == older and state["step"] == 1
    assert len(lines) == 1 and "sha256 differs from step_00000002.pt.sha256" in lines[0]


def test_no_intact_checkpoint_is_one_error_line(tmp_path, caption_data, tiny_gpt2):
    from frozen.train.loop import train

    cfg = make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=2)
    train(cfg)
    newest = tmp_path / "run" / "checkpoints" / "step_00000002.pt"
    newest.write_bytes(b"not a zip")
    with pytest.raises(ckpt.CheckpointError, match=r"no intact checkpoint in .*run \(1 damaged\); start a new run_dir"):
        train(_longer(cfg, 4))
    assert not newest.exists() and newest.with_name("step_00000002.pt.damaged").read_bytes() == b"not a zip"


def test_damaged_load_path_file_is_named_and_left_in_place(tmp_path):
    bad = tmp_path / "step_00000004.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ckpt.CheckpointError, match=f"checkpoint {bad} is damaged .*point load_path at another"):
        ckpt.newest_intact(bad, print)
    assert bad.exists()


def test_rotation_keeps_the_new_checkpoint_and_removes_old_checksums(tmp_path):
    for step in (1, 2, 3):
        ckpt.save(ckpt.checkpoint_path(tmp_path, step), {"step": step, "model": {}}, keep_last=1)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000003.pt", "step_00000003.pt.sha256"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_full_or_read_only_disk_is_one_line_and_the_previous_checkpoint_stays(tmp_path, monkeypatch, code):
    previous = ckpt.save(ckpt.checkpoint_path(tmp_path, 1), {"step": 1, "model": {"w": torch.ones(3)}})
    before = previous.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")  # checkpoint.save hands torch.save an open file (tests/test_full_disk.py: a real limit)
        raise OSError(code, __import__("os").strerror(code))

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(WriteError) as info:
        ckpt.save(ckpt.checkpoint_path(tmp_path, 2), {"step": 2, "model": {}}, keep_last=1)
    message = str(info.value)
    assert "\n" not in message
    assert f"cannot write {tmp_path / 'checkpoints' / 'step_00000002.pt'}" in message
    assert f"free on {tmp_path / 'checkpoints'}" in message and "relaunch the same command" in message
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000001.pt", "step_00000001.pt.sha256"], "no temporary file is left behind"
    assert previous.read_bytes() == before


def test_export_on_a_full_disk_is_one_line_and_a_relaunch_exports(tmp_path, caption_data, tiny_gpt2, monkeypatch):
    from frozen.model import frozen_model
    from frozen.train.loop import train

    cfg = make_cfg(tmp_path / "run", caption_data, tiny_gpt2, max_steps=2)
    real = frozen_model.write_export

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(frozen_model, "write_export", full_disk)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'run' / 'export'}: the disk is full "
                       r"\([0-9.]+ [KMGT]?i?B free on .*\); then relaunch the same command"):
        train(cfg)
    assert ckpt.latest_checkpoint(cfg.run_dir).name == "step_00000002.pt"
    monkeypatch.setattr(frozen_model, "write_export", real)
    assert train(cfg)["step"] == 2 and (tmp_path / "run" / "export" / "model.safetensors").is_file()


def _record_disk_calls(monkeypatch) -> list[tuple[str, ...]]:
    """os.fsync (with the path its descriptor names), os.replace and os.unlink, in call order."""
    import os

    calls: list[tuple[str, ...]] = []
    fsync, replace, unlink = os.fsync, os.replace, os.unlink

    def recorded_fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def recorded_replace(src, dst, **kwargs):
        calls.append(("replace", str(src), str(dst)))
        return replace(src, dst, **kwargs)

    def recorded_unlink(path, **kwargs):
        calls.append(("unlink", str(path)))
        return unlink(path, **kwargs)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    monkeypatch.setattr(os, "unlink", recorded_unlink)
    return calls


def test_checkpoint_bytes_are_on_disk_before_the_rename_and_the_rename_before_rotation(tmp_path, monkeypatch):
    """A power loss must never leave the newest name on an empty file after rotation removed the older one."""
    ckpt.save(ckpt.checkpoint_path(tmp_path, 1), {"step": 1, "model": {}})
    calls = _record_disk_calls(monkeypatch)
    ckpt.save(ckpt.checkpoint_path(tmp_path, 2), {"step": 2, "model": {"w": torch.ones(3)}}, keep_last=1)
    folder = tmp_path / "checkpoints"
    tmp = calls[0][1]
    assert Path(tmp).parent == folder and Path(tmp).name.startswith(".tmp-")
    assert calls[:3] == [("fsync", tmp), ("replace", tmp, str(folder / "step_00000002.pt")), ("fsync", str(folder))]
    side = calls[3][1]
    assert calls[3:6] == [("fsync", side), ("replace", side, str(folder / "step_00000002.pt.sha256")),
                          ("fsync", str(folder))]
    old = folder / "step_00000001.pt"
    assert calls[6:] == [("unlink", str(old)), ("unlink", f"{old}.sha256")], "rotation after the new one is on disk"


def test_export_files_are_on_disk_before_the_rename(tmp_path, monkeypatch):
    from frozen.model.export import write_export

    calls = _record_disk_calls(monkeypatch)
    write_export(tmp_path, {"w": torch.ones(3)}, {"format": "frozen"})
    for i, name in ((0, "model.safetensors"), (3, "frozen_config.json")):
        tmp = calls[i][1]
        assert calls[i:i + 3] == [("fsync", tmp), ("replace", tmp, str(tmp_path / name)), ("fsync", str(tmp_path))]
    assert len(calls) == 6


def test_evaluation_results_are_on_disk_before_the_renames(tmp_path, monkeypatch):
    """results.json and predictions.jsonl: both fsync'd before either is renamed, then their folders."""
    from frozen.eval.store import write_all

    calls = _record_disk_calls(monkeypatch)
    write_all(tmp_path, {"results.json": "{}\n", "submissions/vqa.json": "[]\n"})
    results, submission = tmp_path / "results.json", tmp_path / "submissions" / "vqa.json"
    assert calls == [("fsync", f"{results}.tmp"), ("fsync", f"{submission}.tmp"),
                     ("replace", f"{results}.tmp", str(results)), ("replace", f"{submission}.tmp", str(submission)),
                     ("fsync", str(tmp_path)), ("fsync", str(submission.parent))]
    assert results.read_text() == "{}\n" and submission.read_text() == "[]\n"
