"""One run, one folder: train.py and evaluate.py write Hydra's log and .hydra/ config into run_dir, beside
the checkpoints, metrics and export, and nothing into the repository's outputs/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def _outputs() -> set[Path]:
    return set((REPO / "outputs").rglob("*"))


def test_train_run_dir_holds_config_log_metrics_checkpoints_and_export(tmp_path, caption_data, tiny_gpt2):
    before = _outputs()
    run_dir = tmp_path / "run"
    proc = _run("train.py", "experiment=debug", f"lm.name={tiny_gpt2}", f"data_root={caption_data}",
                "data.train_shards=caps/train-*.tar", "data.val_shards=caps/val-*.tar", "trainer.max_steps=2",
                "trainer.val_every=0", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["run_dir"] == str(run_dir)
    for name in ("train.log", "metrics.jsonl", "export", "checkpoints", ".hydra/overrides.yaml"):
        assert (run_dir / name).exists(), sorted(p.name for p in run_dir.iterdir())
    assert _outputs() == before


def test_evaluate_run_dir_holds_its_config_and_log(tmp_path):
    before = _outputs()
    run_dir = tmp_path / "eval"
    proc = _run("evaluate.py", f"load_path={tmp_path / 'gone'}", f"run_dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-3000:]  # preflight stops it; Hydra has set up the folder by then
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "evaluate.log").is_file()
    assert _outputs() == before
