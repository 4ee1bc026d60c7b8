"""make compare: a multirun of real training runs (lr x k), evaluations with different protocols and LMs."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from frozen.config import (
    EvalSuiteConfig,
    EvaluateConfig,
    VqaTaskConfig,
)
from frozen.errors import InputError
from frozen.eval.compare_report import compare
from frozen.eval.stats import wilson_interval

REPO = Path(__file__).resolve().parents[2]
VQA = "vqa · vqa_accuracy · 0-shot"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, caption_data, tiny_gpt2) -> Path:
    """A real Hydra multirun of 4 short training runs (lr x k), as `make sweep` runs it."""
    root = tmp_path_factory.mktemp("multirun") / "sweep"
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "experiment=debug", f"lm.name={tiny_gpt2}", f"data_root={caption_data}",
         "data.train_shards=caps/train-*.tar", "data.val_shards=caps/val-*.tar", "trainer.max_steps=2",
         "trainer.batch_size=4", "per_gpu_batchsize=4", "trainer.val_every=2", "trainer.val_batches=3",
         "trainer.ckpt_every=0", "trainer.num_sample_captions=1", "trainer.lr=1e-3,1e-2",
         "model.num_prefix_tokens=1,2", f"hydra.sweep.dir={root}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def suite(prompt="Q: {question} A:", shots=(0, 2), max_examples=8, conditions=("image", "no_image")) -> EvalSuiteConfig:
    return EvalSuiteConfig(name="tiny", tasks={"vqa": VqaTaskConfig(
        shards="vqa/vqa-test-*.tar", demo_shards="vqa/vqa-train-*.tar", shots=list(shots), prompt=prompt,
        conditions=list(conditions), num_trials=2, max_new_tokens=2, max_examples=max_examples)})


@pytest.fixture(scope="module")
def evals(tmp_path_factory, caption_data, tiny_lm_dirs) -> dict[str, Path]:
    """Evaluation run folders: ``a`` and ``c`` share a protocol (gpt2 / llama LMs; ``c`` runs only the image
    condition, as make demo's second model does), ``b`` has another prompt, shots and number of questions (gpt2)."""
    from frozen import FrozenModel
    from frozen.eval.run import evaluate

    root = tmp_path_factory.mktemp("evals")
    exports = {}
    for kind in ("gpt2", "llama"):
        torch.manual_seed(0)
        model = FrozenModel.from_pretrained(str(tiny_lm_dirs[kind]), vision="tiny_cnn", image_size=32)
        exports[kind] = model.save_pretrained(root / f"export_{kind}")
    runs = {"a": ("gpt2", suite()), "b": ("gpt2", suite("Question: {question} Answer:", (0,), 6)),
            "c": ("llama", suite(conditions=("image",)))}
    for name, (kind, tasks) in runs.items():
        evaluate(EvaluateConfig(eval=tasks, load_path=str(exports[kind]), data_root=str(caption_data),
                                run_dir=str(root / name), batch_size=8, device="cpu"))
    return {name: root / name for name in runs}


def by_label(curves, panel):
    return {c.label: c for c in curves if c.panel == panel}


def cell(row):
    lo, hi = wilson_interval(row["mean"], row["num_examples"])
    return f"{row['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def t_interval(mean, values):
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    half = {2: 12.706, 3: 4.303}[len(values)] * sd / math.sqrt(len(values))
    return mean - half, mean + half


def test_a_sweep_compares_its_validation_loss_against_k_one_line_per_lr(sweep, tmp_path):
    done = compare([sweep], tmp_path / "out")
    assert [r.label for r in done["runs"]] == ["#0", "#1", "#2", "#3"]
    assert {(r.config["experiment"], r.config["lm"], r.config["model"]) for r in done["runs"]} == {
        ("debug", "tiny", "tiny_cnn")}  # the presets chosen, from Hydra's hydra.yaml
    assert done["keys"] == ["model.num_prefix_tokens", "trainer.lr"]
    assert done["x"] == "model.num_prefix_tokens" and done["flags"] == []
    rows = {job: json.loads(next(sweep.glob(f"{job}_*/validation.json")).read_text())["rows"][0] for job in range(4)}
    assert all(len(r["batch_losses"]) == 3 for r in rows.values())
    text = done["markdown"].read_text()
    assert "Every task was measured with the same protocol" in text
    assert "| #2 | " + str(next(sweep.glob("2_*"))) + " | 1 | 0.01 |" in text
    cells = []
    for job in range(4):
        lo, hi = t_interval(rows[job]["mean"], rows[job]["batch_losses"])
        cells.append(f"{rows[job]['mean']:.3f} [{lo:.3f}, {hi:.3f}]")
    assert "| validation | image | last validation | caption_loss | " + " | ".join(cells) + " |" in text
    curves = by_label(done["curves"], "validation · caption_loss · last validation")
    assert set(curves) == {"image, trainer.lr=0.001", "image, trainer.lr=0.01"}
    for lr, jobs in (("0.001", (0, 1)), ("0.01", (2, 3))):
        curve = curves[f"image, trainer.lr={lr}"]
        assert curve.x == [1.0, 2.0] and curve.runs == [f"#{j}" for j in jobs]
        assert curve.y == [rows[j]["mean"] for j in jobs]
        intervals = [t_interval(rows[j]["mean"], rows[j]["batch_losses"]) for j in jobs]
        assert curve.lo == pytest.approx([i[0] for i in intervals])
        assert curve.hi == pytest.approx([i[1] for i in intervals])
    assert done["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_different_protocols_are_flagged_and_never_share_a_line(evals, tmp_path):
    recorded = json.loads((evals["b"] / "results.json").read_text())["protocol"]["vqa"]
    assert recorded["prompt"] == "Question: {question} Answer:" and recorded["shots"] == [0]
    assert recorded["metric_revision"] == {"vqa_accuracy": "vqaEval.py a013f00"} and "conditions" not in recorded
    done = compare([evals["a"], evals["b"]], tmp_path / "out")
    assert done["flags"] == ["⚠ vqa: max_examples differs: 8 (a) vs 6 (b)",
                             "⚠ vqa: shots differs: [0, 2] (a) vs [0] (b)",
                             "⚠ vqa: prompt differs: Q: {question} A: (a) vs Question: {question} Answer: (b)"]
    text = done["markdown"].read_text()
    assert all(flag in text for flag in done["flags"])
    rows = {name: {(r["metric"], r["shots"], r["condition"]): r
                   for r in json.loads((evals[name] / "results.json").read_text())["rows"]} for name in "ab"}
    a2 = rows["a"][("vqa_accuracy", 2, "image")]
    lo, hi = wilson_interval(a2["mean"], a2["num_examples"])
    assert f"| vqa ⚠ | image | 2-shot | vqa_accuracy | {a2['mean']:.3f} [{lo:.3f}, {hi:.3f}] (A) | – |" in text
    b0 = rows["b"][("vqa_accuracy", 0, "no_image")]
    lo, hi = wilson_interval(b0["mean"], b0["num_examples"])
    assert f"| no_image | 0-shot | vqa_accuracy | {cell(rows['a'][('vqa_accuracy', 0, 'no_image')])} (A) | " \
           f"{b0['mean']:.3f} [{lo:.3f}, {hi:.3f}] (B) |" in text
    curves = by_label(done["curves"], VQA)
    assert set(curves) == {"image, protocol A", "image, protocol B", "no_image, protocol A", "no_image, protocol B"}
    for group, name, index in (("A", "a", 0.0), ("B", "b", 1.0)):
        row = rows[name][("vqa_accuracy", 0, "image")]
        curve = curves[f"image, protocol {group}"]
        assert (curve.x, curve.y, curve.runs) == ([index], [row["mean"]], [name])
        assert (curve.lo[0], curve.hi[0]) == wilson_interval(row["mean"], row["num_examples"])


def test_an_lm_size_curve_when_the_lm_varies(evals, tiny_lm_dirs, tmp_path):
    done = compare([evals["c"], evals["a"]], tmp_path / "out")
    assert done["flags"] == [] and done["keys"][:2] == ["lm.name", "lm_num_parameters"]
    assert done["x"] == "lm_num_parameters"
    sizes = {kind: sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_lm_dirs[kind]).parameters())
             for kind in ("gpt2", "llama")}
    assert sizes["gpt2"] != sizes["llama"]
    assert by_label(done["curves"], VQA)["no_image"].runs == ["a"]  # c ran no no_image cell: not a protocol flag
    curve = by_label(done["curves"], VQA)["image"]
    order = sorted([("a", sizes["gpt2"]), ("c", sizes["llama"])], key=lambda pair: pair[1])
    assert curve.x == [float(size) for _, size in order] and curve.runs == [name for name, _ in order]
    means = {name: next(r["mean"] for r in json.loads((evals[name] / "results.json").read_text())["rows"]
                        if (r["metric"], r["shots"], r["condition"]) == ("vqa_accuracy", 0, "image")) for name in "ac"}
    assert curve.y == [means[name] for name, _ in order]


def test_results_without_a_recorded_protocol(evals, tmp_path):
    """A results.json written before "protocol" existed (make demo's): rebuilt from its config; only the metric
    revision is unknown, which is flagged against a run that records it and not between two old runs."""
    old = []
    for name in ("old1", "old2"):
        (tmp_path / name).mkdir()
        results = json.loads((evals["a"] / "results.json").read_text())
        del results["protocol"], results["lm_num_parameters"]
        (tmp_path / name / "results.json").write_text(json.dumps(results))
        old.append(tmp_path / name)
    assert compare(old, tmp_path / "out1")["flags"] == []
    assert compare([old[0], evals["a"]], tmp_path / "out2")["flags"] == [
        '⚠ vqa: metric_revision differs: not recorded (old1) vs {"vqa_accuracy": "vqaEval.py a013f00"} (a)']


def test_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=f"^{empty} is not a run: it has no results.json, validation.json or "
                                         r"\.hydra/config.yaml; pass a training or evaluation run folder"):
        compare([empty], tmp_path / "out")
    bare = tmp_path / "bare"
    (bare / ".hydra").mkdir(parents=True)
    (bare / ".hydra" / "config.yaml").write_text("trainer: {lr: 0.1}\n")
    with pytest.raises(InputError, match=f"^{bare} is a run without results .* evaluate it"):
        compare([bare], tmp_path / "out")
    with pytest.raises(InputError, match="^no runs to compare: make compare RUNS="):
        compare([], tmp_path / "out")
    summary = tmp_path / "demo"
    summary.mkdir()
    (summary / "results.json").write_text(json.dumps({"rows": [
        {"task": "t", "metric": "m", "condition": "image", "mean": 0.5, "model": name} for name in ("frozen", "vqa")]}))
    with pytest.raises(InputError, match=f"^{summary}/results.json holds the rows of 2 models \\(frozen, vqa: make "
                                         f"demo's summary\\); pass each model's evaluation folder instead, e.g. "
                                         f"{summary}/eval/frozen$"):
        compare([summary], tmp_path / "out")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "compare.py"), str(empty), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {empty} is not a run:")
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "out").exists()


def test_the_cli_writes_both_files(sweep, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "compare.py"), str(sweep), "--out", str(out),
                           "--x", "trainer.lr"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "compare.md").read_text() in proc.stdout and (out / "compare.png").is_file()
    assert "the metric against trainer.lr" in (out / "compare.md").read_text()
    shutil.rmtree(out)


def test_evaluations_of_training_runs_take_their_config_from_the_run(sweep, caption_data, tmp_path):
    """load_path = a training run folder (as make demo evaluates): the varying values come from its .hydra config."""
    from frozen.eval.run import evaluate

    for job in (0, 1):  # k = 1 and k = 2, the same lr
        evaluate(EvaluateConfig(eval=suite(shots=(0,), max_examples=4), load_path=str(next(sweep.glob(f"{job}_*"))),
                                data_root=str(caption_data), run_dir=str(tmp_path / f"eval{job}"), batch_size=8,
                                device="cpu"))
    done = compare([tmp_path / "eval0", tmp_path / "eval1"], tmp_path / "out")
    assert done["keys"] == ["model.num_prefix_tokens"] and done["x"] == "model.num_prefix_tokens"
    assert [r.config["trainer.lr"] for r in done["runs"]] == [0.001, 0.001] and done["flags"] == []
    assert by_label(done["curves"], VQA)["image"].x == [1.0, 2.0]


def test_a_wilson_bound_that_misses_a_zero_mean_by_rounding_still_draws(tmp_path):
    from frozen.eval.compare import Run
    from frozen.eval.compare_report import Curve, figure

    lo, hi = wilson_interval(0.0, 25)  # a make demo cell (vqa_accuracy[other], 0 of 25): lo = 1.4e-17 > 0.0
    assert lo > 0.0
    curve = Curve("vqa · vqa_accuracy[other] · 0-shot", "image", x=[0.0], y=[0.0], lo=[lo], hi=[hi], runs=["a"])
    assert figure([curve], [Run("a", tmp_path)], None, tmp_path / "compare.png") == [curve.panel]
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_with_the_same_folder_name_are_told_apart(tmp_path):
    from frozen.eval.compare import load_runs

    results = json.dumps({"rows": [{"task": "t", "metric": "accuracy", "condition": "image", "mean": 0.5,
                                    "num_examples": 10}]})
    folders = [tmp_path / "base" / "outputs" / "eval" / "frozen", tmp_path / "after" / "outputs" / "eval" / "frozen",
               tmp_path / "after" / "frozen_vqa", tmp_path / "m" / "A", tmp_path / "m" / "B"]
    for folder in folders[:3]:
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(results)
    for sweep in folders[3:]:
        (sweep / "0_lr=1").mkdir(parents=True)
        (sweep / "multirun.yaml").write_text("{}\n")
        (sweep / "0_lr=1" / "results.json").write_text(results)
    labels = [run.label for run in load_runs(folders + [folders[2]])]
    assert labels == ["base/…/frozen", "after/…/frozen", "frozen_vqa(3)", "A#0", "B#0", "frozen_vqa(6)"]


def test_the_position_check_and_its_gap_are_compared(tmp_path):
    """text_first rows are their own cells; a derived `position gap` line per task, its interval, – without one."""
    from frozen.eval.stats import difference_interval

    def row(condition, mean, shots=0):
        return {"task": "vqa", "metric": "vqa_accuracy", "shots": shots, "condition": condition, "mean": mean,
                "stddev": 0.0, "num_examples": 80, "num_trials": 1}

    runs = {"base": [row("image", 0.66), row("text_first", 0.34), row("image", 0.42, shots=4)],
            "interleaved": [row("image", 0.80), row("text_first", 0.78)], "old": [row("image", 0.5)]}
    for name, rows in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"rows": rows}))
    done = compare([tmp_path / name for name in runs], tmp_path / "out")
    text = done["markdown"].read_text()
    assert f"| vqa | text_first | 0-shot | vqa_accuracy | {cell(row('text_first', 0.34))} | " \
        f"{cell(row('text_first', 0.78))} | – |" in text
    (lo, hi), (lo2, hi2) = difference_interval(0.66, 80, 0.34, 80), difference_interval(0.80, 80, 0.78, 80)
    assert f"| vqa | image − text_first | 0-shot | position gap | 0.320 [{lo:.2f}, {hi:.2f}] | " \
        f"0.020 [{lo2:.2f}, {hi2:.2f}] | – |" in text
