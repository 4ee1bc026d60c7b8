"""train.py / evaluate.py as a user runs them: every problem at once, one line each, exit 2, nothing loaded.

Each case runs the script as a subprocess. An import probe (a ``sitecustomize`` on PYTHONPATH) writes
the loaded modules at exit: a run stopped by preflight must not have imported transformers' model code
(``transformers.modeling_utils``), which every LM load goes through; the control case shows the probe
does see it when a run goes ahead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL_CODE = "transformers.modeling_utils"
PROBE = """
import atexit, json, os, sys

def _dump():
    with open(os.environ["FROZEN_IMPORT_PROBE"], "w") as f:
        json.dump(sorted(sys.modules), f)

atexit.register(_dump)
"""


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    (folder / "sitecustomize.py").write_text(PROBE)
    return folder


def run(script: str, *args: str, probe_dir: Path, tmp_path: Path, env: dict | None = None):
    """Run ``script`` in the repo; returns (returncode, stdout + stderr, modules imported)."""
    probe = tmp_path / "modules.json"
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update({"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "FROZEN_IMPORT_PROBE": str(probe),
                     "PYTHONPATH": os.pathsep.join([str(probe_dir), os.environ.get("PYTHONPATH", "")]),
                     "HF_HUB_CACHE": str(tmp_path / "empty_hf_cache"), **(env or {})})
    if script == "evaluate.py" and not any(a.startswith("run_dir=") for a in args):
        args = (*args, f"run_dir={tmp_path / 'eval_run'}")  # Hydra's log and .hydra/ under tmp_path, not outputs/
    proc = subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=full_env)
    modules = json.loads(probe.read_text()) if probe.is_file() else None
    return proc.returncode, proc.stdout + proc.stderr, modules


def assert_user_error(rc: int, out: str, modules, *expected: str) -> None:
    assert rc == 2, out[-3000:]
    assert "Traceback" not in out and "Error executing job" not in out, out[-3000:]
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out[-3000:]}"
    assert modules is not None and MODEL_CODE not in modules, "a model was loaded before the checks failed"


def error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("error: ")]


@pytest.fixture
def good(tiny_gpt2, caption_data, tmp_path) -> list[str]:
    """Overrides of a valid, tiny training run (debug preset on the test LM and shards)."""
    return ["experiment=debug", f"lm.name={tiny_gpt2}", f"data_root={caption_data}", f"run_dir={tmp_path / 'run'}",
            "data.train_shards=caps/train-*.tar", "data.val_shards=caps/val-*.tar"]


# ------------------------------------------------------------------------------------------ train.py
def test_bad_values_are_all_reported_before_anything_loads(good, probe_dir, tmp_path):
    rc, out, modules = run("train.py", *good, "model.num_prefix_tokens=0", "trainer.lr=-1", "model.image_size=2",
                           probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, "model.num_prefix_tokens", "trainer.lr", "model.image_size")
    assert len(error_lines(out)) == 3, out


def test_missing_shards_name_the_key_and_path(good, probe_dir, tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    rc, out, modules = run("train.py", *good, f"data_root={empty}", probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, "data.train_shards=caps/train-*.tar", str(empty / "caps" / "train-*.tar"),
                      "data.val_shards=caps/val-*.tar", "make_shards.py")
    assert len(error_lines(out)) == 2, out


def test_missing_load_path_and_init_from(good, probe_dir, tmp_path):
    rc, out, modules = run("train.py", *good, f"load_path={tmp_path / 'gone'}", f"init_from={tmp_path / 'nowhere'}",
                           probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, f"load_path={tmp_path / 'gone'} does not exist",
                      f"load_path={tmp_path / 'nowhere'} does not exist")


def test_hub_lm_missing_from_the_offline_cache(good, probe_dir, tmp_path):
    rc, out, modules = run("train.py", *good, "lm.name=someone/not-a-cached-lm", probe_dir=probe_dir,
                           tmp_path=tmp_path)
    assert_user_error(rc, out, modules, "lm.name", "'someone/not-a-cached-lm' is not in the local Hugging Face cache",
                      "HF_HUB_OFFLINE")


def test_path_like_lm_is_a_missing_folder_not_a_hub_id(good, probe_dir, tmp_path):
    name = "outputs/no_such_lm"  # other path-like forms: tests/test_config.py::test_path_like_lm_names
    rc, out, modules = run("train.py", *good, f"lm.name={name}", probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, f"LM folder '{name}' does not exist")
    assert "Hugging Face cache" not in out


def test_several_kinds_of_problems_at_once(good, probe_dir, tmp_path):
    rc, out, modules = run("train.py", *good, "model.num_prefix_tokens=0", "lm.name=outputs/no_such_lm",
                           f"data_root={tmp_path}", f"load_path={tmp_path / 'gone'}", "model.vision=vit",
                           probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, "model.num_prefix_tokens", "model.vision", "unknown vision backbone 'vit'",
                      "LM folder 'outputs/no_such_lm'", "data.train_shards", "data.val_shards", "load_path=")
    assert len(error_lines(out)) == 6, out
    assert "6 problem(s) found" in out


@pytest.mark.parametrize(
    "override, message",
    [("trainer.learning_rate=1e-3", "Key 'learning_rate' not in 'TrainerConfig'"),
     ("trainer.lr=fast", "Value 'fast' of type 'str' could not be converted to Float"),
     ("model=vit_huge", "Could not find 'model/vit_huge'")],
)
def test_hydra_errors_are_one_line_and_exit_2(override, message, probe_dir, tmp_path):
    rc, out, modules = run("train.py", override, probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, message, override.split("=")[0])
    assert len(error_lines(out)) == 1 and "Config search path" not in out, out


def test_debug_flag_and_hydra_full_error_show_the_traceback(good, probe_dir, tmp_path):
    rc, out, _ = run("train.py", *good, "model.num_prefix_tokens=0", "debug=true", probe_dir=probe_dir,
                     tmp_path=tmp_path)
    assert rc == 1 and "Traceback" in out and "PreflightError" in out and "model.num_prefix_tokens" in out
    rc, out, _ = run("train.py", "trainer.learning_rate=1", probe_dir=probe_dir, tmp_path=tmp_path,
                     env={"HYDRA_FULL_ERROR": "1"})
    assert rc == 1 and "Traceback" in out and "learning_rate" in out


def test_control_a_valid_run_goes_ahead_and_loads_the_model(good, probe_dir, tmp_path):
    # The probe can fail: a run that passes preflight imports the model code and trains.
    rc, out, modules = run("train.py", *good, "trainer.max_steps=1", "trainer.val_every=0", "trainer.ckpt_every=0",
                           probe_dir=probe_dir, tmp_path=tmp_path)
    assert rc == 0, out[-3000:]
    assert MODEL_CODE in modules
    assert (tmp_path / "run" / "export").is_dir()


# ------------------------------------------------------------------------------------------ evaluate.py
def fake_export(folder: Path, lm_name: str) -> Path:
    """A run directory whose export/ names ``lm_name`` (no weights: preflight reads only the config)."""
    (folder / "export").mkdir(parents=True)
    (folder / "export" / "frozen_config.json").write_text(json.dumps({"format": "frozen", "lm": {"name": lm_name}}))
    return folder


def test_evaluate_without_load_path(probe_dir, tmp_path):
    rc, out, modules = run("evaluate.py", f"data_root={tmp_path}", probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, "load_path is not set", "eval.tasks.easyvqa_vqa.shards")


def test_evaluate_missing_export_lm_and_task_data(probe_dir, tmp_path):
    export = fake_export(tmp_path / "run", "outputs/no_such_lm")
    empty = tmp_path / "data"
    empty.mkdir()
    rc, out, modules = run("evaluate.py", f"load_path={export}", f"data_root={empty}", "batch_size=0",
                           probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, "batch_size must be >= 1", "LM folder 'outputs/no_such_lm' does not exist",
                      "eval.tasks.easyvqa_caption.shards=easyvqa/captions-test-*.tar",
                      "eval.tasks.easyvqa_vqa.shards", str(empty / "easyvqa"))
    rc, out, modules = run("evaluate.py", f"load_path={tmp_path / 'gone'}", f"data_root={empty}",
                           "tasks=[easyvqa_vqa,nope]", probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, f"load_path={tmp_path / 'gone'} does not exist",
                      "'nope' is not a task of eval=easyvqa", "eval.tasks.easyvqa_vqa.shards")
    assert "easyvqa_caption" not in "\n".join(line for line in error_lines(out) if "nope" not in line)


def test_evaluate_deepmind_root_missing(probe_dir, tmp_path, tiny_gpt2):
    export = fake_export(tmp_path / "run", str(tiny_gpt2))
    rc, out, modules = run("evaluate.py", "eval=fewshot_deepmind", f"load_path={export}", f"data_root={tmp_path}",
                           probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, f"root={tmp_path}/fewshot is not a folder")
    assert "LM" not in "\n".join(error_lines(out))  # the export's LM exists


def test_evaluate_task_root_that_is_a_file_is_refused_before_the_lm_loads(probe_dir, tmp_path, tiny_gpt2):
    export = fake_export(tmp_path / "run", str(tiny_gpt2))
    (tmp_path / "fewshot").write_text("an archive, not its extracted folder")
    rc, out, modules = run("evaluate.py", "eval=fewshot_deepmind", f"load_path={export}", f"data_root={tmp_path}",
                           probe_dir=probe_dir, tmp_path=tmp_path)
    assert_user_error(rc, out, modules, f"root={tmp_path}/fewshot is not a folder")


# ------------------------------------------------------------------------------------------ make targets
def make(*args: str, **kw) -> subprocess.CompletedProcess:
    """``make`` without rebuilding the shared venv (its install stamp counts as up to date)."""
    return subprocess.run(["make", "-s", "-o", ".venv/.installed", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}, **kw)


def help_targets() -> list[str]:
    import re

    return re.findall(r"^\s+(?:\x1b\[36m)?([a-z][a-z0-9_-]*)", make("help", check=True).stdout, re.M)


def test_every_help_target_has_a_recipe_that_make_can_plan(tmp_path):
    # -n: plan only. A target whose prerequisite has no rule (the old sweep's outputs/tiny_lm) fails here.
    targets = help_targets()
    assert {"help", "shards", "tiny-lm", "sweep", "lint", "train", "test", "demo"} <= set(targets)
    for target in targets:
        proc = make("-n", target, f"TINY_LM={tmp_path}/lm", f"DATA_ROOT={tmp_path}/data", "LOAD_PATH=x")
        assert proc.returncode == 0, (target, proc.stderr)


def test_sweep_from_a_fresh_clone_first_builds_the_tiny_lm_and_the_shards(tmp_path):
    plan = make("-n", "sweep", f"TINY_LM={tmp_path}/lm", f"DATA_ROOT={tmp_path}/data", check=True).stdout
    steps = [line for line in plan.splitlines() if ".venv/bin/python" in line]
    assert f"-m frozen.core.tiny {tmp_path}/lm" in steps[0] or f"-m frozen.core.tiny {tmp_path}/lm" in steps[1]
    assert any(f"make_shards.py easyvqa --out {tmp_path}/data/easyvqa" in s for s in steps[:2])
    assert "train.py -m experiment=debug" in steps[2] and f"data_root={tmp_path}/data" in steps[2]
    assert f"FROZEN_TINY_LM={tmp_path}/lm" in plan


@pytest.mark.slow
def test_make_sweep_runs_from_scratch(tmp_path):
    """The real target on scratch paths: tiny LM, a few shards, 4 runs of 2 steps (about a minute)."""
    proc = make("sweep", f"TINY_LM={tmp_path}/lm", f"DATA_ROOT={tmp_path}/data", "SHARDS_ARGS=--limit 64",
                f"ARGS=trainer.max_steps=2 trainer.val_every=0 trainer.ckpt_every=0 hydra.sweep.dir={tmp_path}/sweep",
                timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "sweep").glob("*/export/frozen_config.json"))) == 4
