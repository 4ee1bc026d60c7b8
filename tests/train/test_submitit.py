"""submitit's own requeue, run locally (``hydra/launcher=local``), and the sbatch script of ``hydra/launcher=slurm``.

The requeue tests run ``python train.py -m hydra/launcher=local``: hydra-submitit-launcher pickles
train.py's task, submitit's local controller runs it, sends SIGUSR2 ``signal_delay_s`` before
``timeout_min`` (or the test sends it early: a preemption), the run checkpoints at its step, submitit's
handler requeues, the controller starts the task again and it resumes. Slow (minutes): run by ``.ci/run``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainkit import descendants, metrics

REPO = Path(__file__).resolve().parents[2]
TRAIN_S = 45  # seconds of steps per job: with the signal 30 s before a 1-minute limit, each run of the task
# trains ~20 s, so the job needs 2-3 runs, well within the 6 that submitit's local controller allows a job
# (its max_retry) even if this machine's load halves or doubles the speed meanwhile.


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "HF_HUB_CACHE": str(tmp_path / "hf"),
           "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _args(run: Path, lm: Path, data: Path, steps: int) -> list[str]:
    return ["experiment=debug", f"lm.name={lm}", f"data_root={data}", f"run_dir={run}",
            "data.train_shards=caps/train-*.tar", "data.val_shards=caps/val-*.tar", f"trainer.max_steps={steps}",
            "trainer.val_every=0", "trainer.ckpt_every=0", "trainer.log_every=10"]


def _submit(run: Path, lm: Path, data: Path, steps: int, tmp_path: Path, *launcher: str) -> subprocess.Popen:
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=local", f"hydra.sweep.dir={tmp_path / 'sweep'}",
           *launcher, *_args(run, lm, data, steps)]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _job_logs(tmp_path: Path) -> str:
    """submitit's log files of the job (stdout then stderr of task 0, all its requeued runs appended)."""
    (folder,) = [p for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.is_dir() and p.name != "%j"]
    return "".join(p.read_text() for p in sorted(folder.glob("*_0_log.*"), key=lambda p: p.suffix != ".out"))


def _submitit_says(log: str, what: str) -> list[str]:
    """submitit's own log lines (its format, not Hydra's copy; once, though it writes to stdout and stderr)."""
    return list(dict.fromkeys(line for line in log.splitlines() if line.startswith("submitit ") and what in line))


def _export_bytes(run: Path) -> dict[str, bytes]:
    """Every file of the export; the model card's usage lines name the export's own path, made neutral."""
    export = run / "export"
    return {p.name: p.read_bytes().replace(str(export).encode(), b"EXPORT") for p in sorted(export.iterdir())}


def _train(run: Path, lm: Path, data: Path, steps: int) -> None:
    proc = subprocess.run([sys.executable, "train.py", *_args(run, lm, data, steps)], cwd=REPO,
                          env=_env(run.parent), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, caption_data, tiny_gpt2) -> tuple[Path, int]:
    """(run dir, steps) of the uninterrupted run; steps: TRAIN_S seconds at this machine's measured speed."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    _train(tmp / "speed", tiny_gpt2, caption_data, 300)
    times = {s: t for s, t in metrics(tmp / "speed", "time").items() if s >= 10}  # after the first step's warm-up
    per_s = (max(times) - min(times)) / (times[max(times)] - times[min(times)])
    steps = max(300, int(per_s * TRAIN_S))
    _train(tmp / "run", tiny_gpt2, caption_data, steps)
    return tmp / "run", steps


def _stops(log: str) -> list[int]:
    """Steps at which the run stopped with a checkpoint and handed the signal to submitit."""
    pattern = r"preempted by SIGUSR2: stopped after step (\d+) with checkpoint \S+step_(\d+)\.pt; .*?handing SIGUSR2"
    found = [(int(a), int(b)) for a, b in re.findall(pattern, " ".join(log.split()))]
    assert all(a == b for a, b in found), found
    return [a for a, _ in found]


@pytest.mark.slow
def test_a_job_at_its_time_limit_is_requeued_by_submitit_and_exports_the_same_bytes(
    uninterrupted, tmp_path, caption_data, tiny_gpt2
):
    reference, steps = uninterrupted
    run = tmp_path / "run"
    # 1-minute limit, SIGUSR2 30 s before it: every run of the task gets ~20 s of steps, so the job needs requeues.
    job = _submit(run, tiny_gpt2, caption_data, steps, tmp_path, "hydra.launcher.timeout_min=1",
                  "hydra.launcher.setup=['export SUBMITIT_LOCAL_SIGNAL_DELAY_S=30']",
                  "hydra.launcher.max_num_timeout=10")
    out, _ = job.communicate(timeout=900)
    assert job.returncode == 0, out
    log = _job_logs(tmp_path)
    stops = _stops(log)
    assert stops and all(0 < s < steps for s in stops), log
    assert len(_submitit_says(log, "this job is timed-out")) == len(stops), log
    requeued = [int(re.findall(r"\((\d+) remaining timeouts\)", line)[0]) for line in _submitit_says(log, "Requeued")]
    assert requeued == list(range(9, 9 - len(stops), -1)), "each time limit uses one of max_num_timeout=10"
    resumed = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", " ".join(log.split()))]
    assert resumed == stops, "each requeued run resumed from the checkpoint of the step it stopped at"
    assert max(metrics(run)) == steps
    assert _export_bytes(run) == _export_bytes(reference)


def _submitit_task(job: subprocess.Popen) -> int:
    for pid in descendants(job.pid):
        try:
            if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise AssertionError("no submitit task under the launcher")


@pytest.mark.slow
def test_a_preempted_job_is_requeued_by_submitit_without_using_a_timeout(
    uninterrupted, tmp_path, caption_data, tiny_gpt2
):
    """Preemption: SIGUSR2 long before the time limit (as Slurm's --signal on preemption, or submitit's
    local interrupt on the task): submitit calls it a preemption, requeues without counting a timeout."""
    reference, steps = uninterrupted
    run = tmp_path / "run"
    job = _submit(run, tiny_gpt2, caption_data, steps, tmp_path, "hydra.launcher.timeout_min=30",
                  "hydra.launcher.max_num_timeout=3")
    try:
        deadline = time.monotonic() + 300
        while not (run / "metrics.jsonl").is_file() or max(metrics(run), default=0) < 20:
            assert time.monotonic() < deadline and job.poll() is None, "the job never reached step 20"
            time.sleep(0.05)
        os.kill(_submitit_task(job), signal.SIGUSR2)
        out, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            for pid in descendants(job.pid):
                os.kill(pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 0, out
    log = _job_logs(tmp_path)
    (stop,) = _stops(log)
    assert 20 <= stop < steps
    assert _submitit_says(log, "this job is preempted") and _submitit_says(log, "(3 remaining timeouts)"), log
    assert f"resumed from {run / 'checkpoints' / f'step_{stop:08d}.pt'} at step {stop}" in " ".join(log.split())
    assert _export_bytes(run) == _export_bytes(reference)


def test_the_slurm_preset_renders_the_sbatch_script_for_two_nodes_of_eight_gpus(tmp_path, monkeypatch):
    """The sbatch script that hydra/launcher=slurm submits for num_gpus=8 num_nodes=2, rendered by the
    launcher's own code (hydra-submitit-launcher -> submitit's SlurmExecutor) but not submitted."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from frozen.config import register_configs

    fake = tmp_path / "bin"  # submitit refuses to build a Slurm executor where no srun is on PATH
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    rendered = []

    def render_instead_of_submitting(executor, fn, *args):
        rendered.append(executor._executor._make_submission_file_text("python -u -m submitit.core._submit X", "0"))
        rendered.append(executor._executor.max_num_timeout)
        raise StopIteration

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", render_instead_of_submitting)
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "num_gpus=8", "num_nodes=2",
                                          f"hydra.sweep.dir={tmp_path / 'sweep'}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(StopIteration):
        launcher.launch([["num_gpus=8", "num_nodes=2"]], initial_job_idx=0)
    script, max_num_timeout = rendered
    lines = set(script.splitlines())
    assert "#SBATCH --nodes=2" in lines, script
    assert "#SBATCH --ntasks-per-node=8" in lines, script
    assert "#SBATCH --gpus-per-node=8" in lines, script
    assert "#SBATCH --signal=USR2@300" in lines, "SIGUSR2 five minutes before the time limit"
    assert "#SBATCH --time=4320" in lines, script
    assert "#SBATCH --open-mode=append" in lines, "a requeued job appends to its logs"
    assert "#SBATCH --requeue" in lines, "Slurm may requeue the job (preemption, node failure)"
    assert any(line.startswith("srun ") for line in lines), script
    assert max_num_timeout == 20, "submitit requeues a job that hit its time limit up to 20 times"
