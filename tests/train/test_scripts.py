"""The GPU check's dry run and the generated scaling plan: both run here so that neither can rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from frozen import scaling as sp

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_parses_every_command(tmp_path):
    env = {**os.environ, "PY": sys.executable}
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True
    assert {name: run["status"] for name, run in report["runs"].items()} == dict.fromkeys(
        ("bench", "single", "compiled", "ddp", "fsdp", "eval", "syncs", "syncs_old"), "parsed"
    )
    syncs = yaml.safe_load((tmp_path / "syncs.cfg.yaml").read_text())  # the host-sync count trains the demo too
    assert syncs["trainer"]["log_every"] == 20 and syncs["trainer"]["max_steps"] == 100
    # What Hydra composed is what the GPU run would train: the switches reached the configs.
    single, ddp, fsdp = (yaml.safe_load((tmp_path / f"{n}.cfg.yaml").read_text()) for n in ("single", "ddp", "fsdp"))
    assert single["trainer"]["max_steps"] == 200 and single["trainer"]["precision"] == "bf16"
    assert single["trainer"]["device"] == "cuda" and single["name"] == "demo_frozen"
    compiled = yaml.safe_load((tmp_path / "compiled.cfg.yaml").read_text())
    assert compiled["trainer"]["compile"] is True and single["trainer"]["compile"] is False
    assert {k: v for k, v in compiled["trainer"].items() if k != "compile"} == {
        k: v for k, v in single["trainer"].items() if k != "compile"}, "the compiled run differs only in compile"
    assert ddp["num_gpus"] == 2 and ddp["trainer"]["strategy"] == "ddp" and ddp["trainer"]["batch_size"] == 32
    assert fsdp["trainer"]["strategy"] == "fsdp"
    evaluation = yaml.safe_load((tmp_path / "eval.cfg.yaml").read_text())
    assert evaluation["load_path"] == f"{tmp_path}/single/export"


def test_gpu_check_rejects_unknown_arguments():
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--fast"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown argument '--fast'" in proc.stderr


def test_scaling_plan_in_docs_is_what_the_script_computes():
    proc = subprocess.run(
        [sys.executable, "scripts/scaling_plan.py", "--check"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr


def test_scaling_plan_numbers_follow_from_the_stated_formulas():
    lm = sp.LM("test", params=1e9, layers=10, hidden=1000, heads=10, vocab=1000, tied=False)
    p = sp.plan(lm, vision_flops=0, vision_act=0, vision_params=0)
    assert p["ddp"]["weights"] == 2e9 / 2**30  # bf16: 2 bytes per parameter, whole on every GPU
    # fsdp: 1/8 of the weights + root (input embedding and head, unsharded) + two gathered layers
    layer = (1e9 - 2 * 1000 * 1000) / 10
    assert p["fsdp"]["weights"] * 2**30 == 2e9 / 8 + 2 * 2 * 1000 * 1000 + 2 * 2 * layer
    # time: frozen-LM FLOPs 4 * N_matmul * tokens (+ mapper) over 8 GPUs at the assumed MFU
    tokens = sp.BATCH * (sp.K + sp.CAPTION_TOKENS)
    n_mapper = 2049 * sp.K * 1000
    flops = 4 * (1e9 - 1000 * 1000) * tokens + 6 * n_mapper * sp.BATCH
    assert p["flops"]["step"] == flops
    assert p["ddp"]["step_s"] == flops / (sp.GPUS * sp.PEAK_TFLOPS * 1e12 * sp.MFU)
