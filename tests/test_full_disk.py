"""Every writer against a real write limit (tests/disklimit.py: RLIMIT_FSIZE in a child process, EFBIG as a full
disk gives ENOSPC): Hydra's own .hydra/config.yaml, the training checkpoint (torch.save's zip writer fails with
a RuntimeError, not an OSError), the export (safetensors' Rust writer), metrics.jsonl and an evaluation's
results. The promise each keeps: one line naming the file and the free space, exit 2 from the entry points,
no temporary file left, and the earlier files (the previous checkpoint, export, results) as they were.
make_shards' shards: tests/prep/test_cli.py."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from disklimit import error_lines, run_limited
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from frozen.config import register_configs

REPO = Path(__file__).resolve().parents[1]
LIMIT = "the file is over the file size limit (ulimit -f)"
register_configs()
if sys.platform != "linux":  # RLIMIT_FSIZE / SIGXFSZ as used here are Linux's
    pytestmark = pytest.mark.skip(reason="Linux only")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_hydra_run_folder_on_a_full_disk_is_one_line_and_exit_2(script, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_limited([script, f"load_path={tmp_path / 'gone'}", f"run_dir={run_dir}"], max_bytes=200)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert error_lines(proc.stderr) == [
        f"error: cannot write {run_dir / '.hydra' / 'config.yaml'}: {LIMIT} "
        f"({proc.stderr.split(' (', 2)[-1].split(')')[0]}); nothing was run; free space, fix the permissions or "
        "write elsewhere"]
    assert f"free on {run_dir / '.hydra'})" in proc.stderr


def _debug_run(run_dir: Path, data_root: Path, lm_dir: Path, steps: int) -> list[str]:
    return ["experiment=debug", f"lm.name={lm_dir}", f"data_root={data_root}", "data.train_shards=caps/train-*.tar",
            "data.val_shards=null", "trainer.val_every=0", "trainer.ckpt_every=2", f"trainer.max_steps={steps}",
            f"run_dir={run_dir}"]


@pytest.mark.slow  # ~27 s: train.py in a child process after a run in this one
def test_checkpoint_on_a_full_disk_is_one_line_and_the_previous_checkpoint_resumes(tmp_path, caption_data, tiny_gpt2):
    from frozen.train.loop import train

    run_dir = tmp_path / "run"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        first = compose("train", overrides=_debug_run(run_dir, caption_data, tiny_gpt2, steps=2))
    train(OmegaConf.to_object(first), checked=True)
    previous = run_dir / "checkpoints" / "step_00000002.pt"
    before = _digest(previous)
    assert previous.stat().st_size > 64_000  # the next one cannot fit under the limit below

    # The relaunch to 4 steps: Hydra's files and metrics.jsonl fit in 64 kB, the checkpoint at step 4 does not.
    proc = run_limited(["train.py", *_debug_run(run_dir, caption_data, tiny_gpt2, steps=4)], max_bytes=64_000)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    [line] = error_lines(proc.stderr)
    folder = run_dir / "checkpoints"
    assert line.startswith(f"error: cannot write {folder / 'step_00000004.pt'}: {LIMIT} (")
    assert line.endswith(f"free on {folder}); then relaunch the same command: it resumes from the last checkpoint; "
                         "free space, fix the permissions or write elsewhere")
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000002.pt", "step_00000002.pt.sha256"]
    assert _digest(previous) == before
    # ... and the relaunch with space resumes from it
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        again = compose("train", overrides=_debug_run(run_dir, caption_data, tiny_gpt2, steps=4))
    assert train(OmegaConf.to_object(again), checked=True)["step"] == 4


def _child(code: str, max_bytes: int, **env: str):
    """Run ``code`` under the limit; it prints the WriteError's message and exits 2 (as the entry points do)."""
    wrapped = ("import sys\nfrom frozen.errors import WriteError\ntry:\n"
               + "".join(f"    {line}\n" for line in code.strip().splitlines())
               + "except WriteError as err:\n    print(err, file=sys.stderr)\n    sys.exit(2)\n")
    return run_limited(["-c", wrapped], max_bytes=max_bytes, **env)


def test_checkpoint_writer_on_a_full_disk_is_one_line_and_the_previous_checkpoint_stays(tmp_path):
    """checkpoint.save itself (the train.py run above is the slow end-to-end twin)."""
    from frozen.train import checkpoint as ckpt

    previous = ckpt.save(ckpt.checkpoint_path(tmp_path, 1), {"step": 1, "model": {}})
    before = _digest(previous)
    proc = _child(f"""
import torch
from frozen.train import checkpoint as ckpt
ckpt.save(ckpt.checkpoint_path({str(tmp_path)!r}, 2), {{"step": 2, "model": {{"w": torch.ones(4096)}}}}, keep_last=1)
""", max_bytes=4096)
    assert proc.returncode == 2, proc.stderr[-3000:]
    folder = tmp_path / "checkpoints"
    assert proc.stderr.splitlines() == [
        f"cannot write {folder / 'step_00000002.pt'}: {LIMIT} ({proc.stderr.split(' (', 2)[-1].split(')')[0]}); "
        "then relaunch the same command: it resumes from the last checkpoint; free space, fix the permissions or "
        "write elsewhere"]
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000001.pt", "step_00000001.pt.sha256"]
    assert _digest(previous) == before


def test_export_on_a_full_disk_is_one_line_and_the_earlier_export_stays(tmp_path):
    from frozen.model.export import write_export

    export = tmp_path / "export"
    write_export(export, {"w": torch.zeros(16)}, {"format": "frozen", "old": True})
    before = {p.name: _digest(p) for p in export.iterdir()}
    proc = _child(f"""
import torch
from pathlib import Path
from frozen.model.export import write_export
write_export(Path({str(export)!r}), {{"w": torch.ones(4096)}}, {{"format": "frozen"}})
""", max_bytes=4096)
    assert proc.returncode == 2, proc.stderr[-3000:]
    weights = export / "model.safetensors"
    assert proc.stderr.splitlines() == [
        f"cannot write {weights}: {LIMIT} ({proc.stderr.split(' (', 2)[-1].split(')')[0]}); free space, fix the "
        "permissions or write elsewhere"]
    assert {p.name: _digest(p) for p in export.iterdir()} == before, "the earlier export is intact, no .tmp left"
    assert oct(weights.stat().st_mode & 0o777) == oct(0o666 & ~_umask()), "readable as save_file wrote it"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_metrics_log_on_a_full_disk_is_one_line_and_keeps_the_lines_before(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 2.5}\n' * 160)  # 4000 bytes
    before = metrics.read_bytes()
    proc = _child(f"""
from frozen.core.logging import RunLogger
logger = RunLogger({str(tmp_path)!r}, active=True)
logger.step(161, {{"loss": 2.0, "lr": 1e-3, "note": "x" * 200}})
""", max_bytes=4096)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        f"cannot write {metrics}: {LIMIT} ({proc.stderr.split(' (', 2)[-1].split(')')[0]}); the lines before are "
        "kept; free space, fix the permissions or write elsewhere"]
    assert metrics.read_bytes() == before, "whole lines only: the cut line is taken back"


def test_wandb_run_on_a_full_disk_stops_at_the_metrics_line(tmp_path):
    """W&B writes its run file from its own process (wandb-core), whose failed writes never reach Python: the
    metrics.jsonl line written at the same step is the one line a W&B run stops with."""
    proc = _child(f"""
from frozen.core.logging import RunLogger
logger = RunLogger({str(tmp_path)!r}, active=True, backend="wandb", mode="offline")
for step in range(1, 1000):
    logger.step(step, {{"loss": 1.0 / step}})
""", max_bytes=16_000, WANDB_MODE="offline", WANDB_SILENT="true")
    assert proc.returncode == 2, proc.stderr[-3000:]
    metrics = tmp_path / "metrics.jsonl"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("cannot write")]
    assert len(lines) == 1 and lines[0].startswith(f"cannot write {metrics}: {LIMIT} (")
    assert "Traceback" not in proc.stderr
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == list(range(1, len(
        metrics.read_text().splitlines()) + 1)), "whole lines, in order"


def test_evaluation_results_on_a_full_disk_are_one_line_and_the_earlier_results_stay(tmp_path):
    from frozen.eval.store import write_all

    write_all(tmp_path, {"results.json": '{"old": 1}\n', "predictions.jsonl": '{"p": 1}\n'})
    proc = _child(f"""
from pathlib import Path
from frozen.eval.store import write_all
write_all(Path({str(tmp_path)!r}), {{"results.json": "{{}}" * 4000, "predictions.jsonl": "x"}})
""", max_bytes=4096)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = proc.stderr.splitlines()[-1]
    assert line.startswith(f"cannot write {tmp_path / 'results.json'}: {LIMIT} (") and "Traceback" not in proc.stderr
    assert f"the results already in {tmp_path} are as they were" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl", "results.json"]
    assert (tmp_path / "results.json").read_text() == '{"old": 1}\n'



def test_write_failures_are_told_apart_from_bugs():
    """What write_error turns into one line: the OSError itself, the OSError a torch.save RuntimeError was
    raised during, a Rust writer's "(os error N)", torch's writer failing on its own; never another error."""
    import errno

    from frozen.errors import write_failure

    def during(outer: BaseException, inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException:
                raise outer  # noqa: B904 - the implicit __context__ is what torch.save leaves
        except BaseException as err:
            return err

    assert write_failure(OSError(errno.ENOSPC, "No space left on device")) == "the disk is full"
    assert write_failure(during(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
                                OSError(errno.EFBIG, "File too large"))) == LIMIT
    assert write_failure(Exception("Error while serializing: I/O error: No space left on device (os error 28)")) == (
        "the disk is full")
    assert write_failure(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")) == (
        "the write was cut short ([enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534: a full disk?)")
    for bug in (OSError(errno.ENOENT, "No such file"), RuntimeError("CUDA out of memory"), ValueError("(os error 2)")):
        assert write_failure(bug) is None


def test_only_hydras_own_write_is_reported_as_nothing_run():
    """A full disk met elsewhere (past Hydra's setup) is not 'nothing was run' at the working directory."""
    import errno

    from frozen.cli import _run_folder_write_error

    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as err:
        assert _run_folder_write_error(err) is None
