"""fewshot.png: the plotted data equals the rows (x, y, whiskers per line, chance), bars for episode
tasks, both demo models on one axes, and the same bytes for the same rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frozen import demo
from frozen.eval.plots import FEWSHOT_NAME, Point, draw, panels, write_fewshot
from frozen.eval.stats import aggregate_seeds, wilson_interval

REPO = Path(__file__).resolve().parents[2]


def _vqa(metric, shots, condition, mean, n=40, std=0.0, trials=1):
    return {"task": "vqa", "metric": metric, "shots": shots, "condition": condition, "mean": mean, "stddev": std,
            "num_examples": n, "num_trials": trials}


def _cap(metric, condition, mean, std):
    return {"task": "caps", "metric": metric, "shots": 0, "condition": condition, "mean": mean, "stddev": std,
            "num_examples": 16, "num_trials": 2}


def _bind(metric, ways, induction, condition, mean, n=60):
    return {"task": "bind", "metric": metric, "ways": ways, "inner_shots": 1, "repeats": 0,
            "task_induction": induction, "condition": condition, "mean": mean, "stddev": 0.05, "num_examples": n,
            "num_trials": 2}


def eval_rows():
    """An evaluation's rows in the order evaluate() writes them (shots 0 then 4, splits after overall)."""
    return [
        _cap("BLEU-4", "image", 0.01, 0.0), _cap("CIDEr", "image", 2.5, 0.4), _cap("CIDEr", "no_image", 0.0, 0.0),
        _vqa("vqa_accuracy", 0, "image", 0.5), _vqa("vqa_accuracy[yes/no]", 0, "image", 0.6, n=20),
        _vqa("vqa_accuracy", 0, "no_image", 0.025),
        _vqa("vqa_accuracy", 4, "image", 0.4, std=0.03, trials=2), _vqa("vqa_accuracy", 4, "no_image", 0.4),
        _vqa("vqa_accuracy", 4, "text_demos", 0.35),
        _bind("accuracy", 2, False, "image", 0.3), _bind("accuracy_strict", 2, False, "image", 0.25),
        _bind("accuracy", 2, False, "no_image", 0.5), _bind("accuracy", 2, True, "image", 0.45),
        _bind("accuracy", 2, True, "no_image", 0.5), _bind("accuracy", 5, True, "image", 0.1),
    ]


def test_panels_are_the_rows_headline_metric_with_intervals_and_chance():
    caps, vqa, bind = panels(eval_rows())
    # captioning: CIDEr (not BLEU-4), no interval for a non-proportion: ± the std over trials
    assert (caps.task, caps.metric, caps.bars, caps.xs, caps.chance) == ("caps", "CIDEr", False, [0], {})
    assert caps.whisker == "± std over evaluation trials"
    assert caps.series == {"image": [Point(0, 2.5, 2.1, 2.9)], "no_image": [Point(0, 0.0, 0.0, 0.0)]}
    # VQA: overall accuracy against shots, one line per condition, Wilson 95% on num_examples; no chance
    assert (vqa.metric, vqa.bars, vqa.xs, vqa.chance) == ("vqa_accuracy", False, [0, 4], {})
    assert vqa.whisker == "95% interval"
    assert list(vqa.series) == ["image", "no_image", "text_demos"]
    assert vqa.series["image"] == [Point(0, 0.5, *wilson_interval(0.5, 40)), Point(4, 0.4, *wilson_interval(0.4, 40))]
    assert vqa.series["text_demos"] == [Point(4, 0.35, *wilson_interval(0.35, 40))]
    lo, hi = wilson_interval(0.025, 40)
    assert vqa.series["no_image"][0] == Point(0, 0.025, lo, hi) and (round(lo, 4), round(hi, 4)) == (0.0044, 0.1288)
    # binding: bars per setting in order of appearance, accuracy (not strict), chance 1/ways per setting
    assert (bind.metric, bind.bars) == ("accuracy", True)
    assert bind.xs == ["2-way 1 inner shot", "2-way 1 inner shot +induction", "5-way 1 inner shot +induction"]
    assert bind.chance == {"2-way 1 inner shot": 0.5, "2-way 1 inner shot +induction": 0.5,
                           "5-way 1 inner shot +induction": 0.2}
    assert [p.y for p in bind.series["image"]] == [0.3, 0.45, 0.1]
    assert [p.y for p in bind.series["no_image"]] == [0.5, 0.5]
    assert bind.series["image"][0] == Point("2-way 1 inner shot", 0.3, *wilson_interval(0.3, 60))


def test_yes_no_chance_and_rows_without_a_mean():
    rows = [_vqa("vqa_accuracy[yes/no]", s, "image", m) for s, m in ((1, 0.55), (0, 0.6))]
    rows.append(_vqa("vqa_accuracy[yes/no]", 4, "image", None))  # every prompt too long: no point
    (panel,) = panels(rows)
    assert panel.chance == {0: 0.5, 1: 0.5} and panel.xs == [0, 1]
    assert [(p.x, p.y) for p in panel.series["image"]] == [(0, 0.6), (1, 0.55)]  # sorted by shots


def test_figure_is_written_with_fixed_size_and_stable_bytes(tmp_path):
    path = write_fewshot(eval_rows(), tmp_path / "a", title="tiny: run/export")
    assert path == tmp_path / "a" / FEWSHOT_NAME
    again = draw(panels(eval_rows()), tmp_path / "b.png", title="tiny: run/export")
    assert path.read_bytes() == again.read_bytes()
    image = Image.open(path)
    assert image.size == (1500, 410)  # 3 panels of 5 x 3.6 in at 100 dpi, + 0.5 in for the title
    assert "Software" not in image.info and b"atplotlib" not in path.read_bytes()
    assert not list(tmp_path.glob("**/*.tmp"))
    assert write_fewshot([], tmp_path / "none") is None and not (tmp_path / "none").exists()
    zero = draw(panels([_vqa("vqa_accuracy", 0, "image", 0.0, n=24)]), tmp_path / "zero.png")  # Wilson low 1e-17
    assert Image.open(zero).size == (500, 360)


def _seed_rows(seed):
    vqa = {"frozen": (0.1 + seed / 10, 0.3), "frozen_vqa": (0.5 + seed / 10, 0.4)}
    rows = []
    for model, (zero, four) in vqa.items():
        rows += [dict(_vqa("vqa_accuracy", 0, "image", zero, n=80), model=model),
                 dict(_vqa("vqa_accuracy", 4, "image", four, n=80, std=0.02, trials=2), model=model),
                 dict(_cap("CIDEr", "image", 2.0 + seed + (model == "frozen_vqa"), 0.1), model=model),
                 dict(_bind("accuracy", 2, True, "image", 0.4 if model == "frozen" else 0.5), model=model)]
        # make demo copies the text-only rows to both models
        rows += [dict(_vqa("vqa_accuracy", s, "no_image", 0.3), model=model) for s in (0, 4)]
        rows += [dict(_bind("accuracy", 2, True, "no_image", 0.5), model=model)]
    return rows


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_demo_figure_puts_both_models_on_each_tasks_axes(tmp_path, num_seeds):
    rows = aggregate_seeds([_seed_rows(s) for s in range(num_seeds)])
    vqa, caps, bind = panels(rows, demo.figure_series, order=[*demo.MODELS, demo.TEXT_ONLY])
    assert list(vqa.series) == ["frozen", "frozen_vqa", "no_image"]  # no_image once, not per model
    mean0 = sum(0.5 + s / 10 for s in range(num_seeds)) / num_seeds
    ci = rows[next(i for i, r in enumerate(rows) if r["model"] == "frozen_vqa" and r.get("shots") == 0
                   and r["metric"] == "vqa_accuracy" and r["condition"] == "image")]["ci95"]
    assert vqa.series["frozen_vqa"][0] == Point(0, pytest.approx(mean0), *ci)
    assert ci == list(wilson_interval(mean0, 80))
    assert [p.y for p in vqa.series["no_image"]] == [0.3, 0.3]
    # CIDEr: ± std over the training seeds (3 seeds), else over evaluation trials (1 seed)
    cider = caps.series["frozen"][0]
    if num_seeds == 3:
        assert caps.whisker == "± std over 3 training seeds"
        assert (cider.y, cider.high - cider.y) == (pytest.approx(3.0), pytest.approx(1.0))  # 2, 3, 4
    else:
        assert caps.whisker == "± std over evaluation trials"
        assert (cider.y, cider.low, cider.high) == (2.0, 1.9, 2.1)
        one_trial = [dict(r, num_trials=1, trial_std=0.0) for r in rows if r["metric"] == "CIDEr"]
        assert panels(one_trial)[0].whisker == "none (one trial)"
    assert bind.bars and [p.y for p in bind.series["frozen"]] == [pytest.approx(0.4)]
    assert [p.y for p in bind.series["frozen_vqa"]] == [0.5]
    assert bind.chance == {"2-way 1 inner shot +induction": 0.5}
    path = demo.demo_figure(rows, tmp_path / "fewshot.png", num_seeds)
    assert Image.open(path).size == (1500, 410)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert (pixels == (0xD6, 0x27, 0x28)).all(-1).any()  # frozen_vqa's colour is drawn


def test_demo_report_redraws_the_figure_from_results_json(tmp_path):
    """`scripts/demo.py --report` (what make demo ends with, without training) writes fewshot.png."""
    rows = aggregate_seeds([_seed_rows(s) for s in range(3)])
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows, "seeds": [0, 1, 2]}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--report", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    expected = demo.demo_figure(rows, tmp_path / "expected.png", num_seeds=3)
    assert (tmp_path / "fewshot.png").read_bytes() == expected.read_bytes()
