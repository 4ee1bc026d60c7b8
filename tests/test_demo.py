"""make demo's aggregation: text-only rows shared by both models, cells over seeds, table markers."""

from __future__ import annotations

import json

from rich.console import Console

from frozen import demo
from frozen.eval.stats import aggregate_seeds


def _write(out, model, rows):
    (out / "eval" / model).mkdir(parents=True)
    (out / "eval" / model / "results.json").write_text(json.dumps({"rows": rows}))


def _vqa(condition, mean):
    return {"task": "vqa", "metric": "vqa_accuracy", "condition": condition, "shots": 0, "mean": mean,
            "stddev": 0.0, "num_examples": 200, "num_trials": 1}


def _binding(condition, mean, induction):
    return {"task": "binding", "metric": "accuracy", "condition": condition, "ways": 2, "inner_shots": 1,
            "repeats": 0, "task_induction": induction, "mean": mean, "stddev": 0.1, "num_examples": 60, "num_trials": 2}


def test_seeds_aggregate_and_table(tmp_path):
    per_seed = []
    for seed, (a, b) in enumerate([(0.60, 0.70), (0.64, 0.74)]):
        out = demo.seed_dir(tmp_path, seed)
        assert out == (tmp_path if seed == 0 else tmp_path / "seed1")
        # the text-only rows exist only in the first model's results: both models get them
        _write(out, "frozen", [_vqa("image", a), _vqa("no_image", 0.1), _binding("image", 0.5, True),
                               _binding("no_image", 0.5, True)])
        _write(out, "frozen_vqa", [_vqa("image", b), _binding("image", 0.9, True)])
        _write(out, "frozen_textmix", [_vqa("image", 0.8), _binding("image", 0.6, True)])
        per_seed.append(demo.merged_rows(out))
    rows = aggregate_seeds(per_seed)
    by = {(r["model"], r["task"], r["condition"]): r for r in rows}
    assert len(rows) == 12  # 3 models x (vqa, binding) x (image, no_image)
    assert abs(by["frozen", "vqa", "image"]["mean"] - 0.62) < 1e-9
    assert abs(by["frozen_vqa", "vqa", "image"]["seed_std"] - 0.028284) < 1e-6  # sample std of 0.70, 0.74
    assert by["frozen_vqa", "vqa", "no_image"]["mean"] == by["frozen_textmix", "vqa", "no_image"]["mean"] == 0.1
    console = Console(width=250, record=True)
    console.print(demo.summary_table(rows, num_seeds=2))
    text = console.export_text()
    assert "0-shot" in text and "2-way 1 inner shot +induction" in text
    assert "0.620 ± 0.028 [0.55, 0.68]*" in text  # 0.62 vs 0.1 no_image on 200 questions: significant
    assert "0.500 ± 0.000 [0.38, 0.62]" in text  # binding at chance: no marker
    assert "0.900 ± 0.000 [0.80, 0.95]*°" in text  # above no_image and above chance
    md = demo.summary_markdown(rows, num_seeds=2).splitlines()
    assert md[0] == "| task | metric | setting | frozen | frozen_vqa | frozen_textmix | no_image | chance |"
    assert md[2] == "| vqa | vqa_accuracy | 0-shot | 0.620 ± 0.028 [0.55, 0.68]* | 0.720 ± 0.028 [0.65, 0.78]* | " \
        "0.800 ± 0.000 [0.74, 0.85]* | 0.100 ± 0.000 [0.07, 0.15] | - |"


def test_cells_without_a_mean_show_a_dash(tmp_path):
    """A setting where no prompt fitted the LM (mean None, its skipped count in the row): "-", no crash."""
    per_seed = []
    for seed in (0, 1):
        out = demo.seed_dir(tmp_path, seed)
        _write(out, "frozen", [_vqa("image", 0.6), _vqa("no_image", None if seed else 0.1)])
        _write(out, "frozen_vqa", [_vqa("image", None)])
        _write(out, "frozen_textmix", [_vqa("image", None)])
        per_seed.append(demo.merged_rows(out))
    md = demo.summary_markdown(aggregate_seeds(per_seed), num_seeds=2).splitlines()
    assert md[2] == "| vqa | vqa_accuracy | 0-shot | 0.600 ± 0.000 [0.53, 0.67] | - | - | - | - |"


def test_position_check_rows_and_gap_in_table_figure_and_preset(tmp_path):
    """text_first is each model's own line (not overwriting its image cell), followed by the position gap per model
    with its interval and per-seed values; the figure draws it; make demo's preset runs it for every model."""
    from pathlib import Path

    from frozen.eval.plots import panels
    from frozen.eval.stats import difference_interval

    per_seed = []
    for seed, (a, b) in enumerate([(0.66, 0.34), (0.70, 0.30)]):
        out = demo.seed_dir(tmp_path, seed)
        _write(out, "frozen", [_vqa("image", a), _vqa("no_image", 0.14), _vqa("text_first", b)])
        _write(out, "frozen_vqa", [_vqa("image", 0.80), _vqa("text_first", 0.78)])
        _write(out, "frozen_textmix", [_vqa("image", 0.80), _vqa("text_first", 0.80)])
        per_seed.append(demo.merged_rows(out))
    rows = aggregate_seeds(per_seed)
    md = demo.summary_markdown(rows, num_seeds=2).splitlines()
    assert md[2] == "| vqa | vqa_accuracy | 0-shot | 0.680 ± 0.028 [0.61, 0.74]* | 0.800 ± 0.000 [0.74, 0.85]* | " \
        "0.800 ± 0.000 [0.74, 0.85]* | 0.140 ± 0.000 [0.10, 0.19] | - |"
    assert md[3] == "| vqa | vqa_accuracy | 0-shot text_first | 0.320 ± 0.028 [0.26, 0.39]* | " \
        "0.780 ± 0.000 [0.72, 0.83]* | 0.800 ± 0.000 [0.74, 0.85]* | 0.140 ± 0.000 [0.10, 0.19] | - |"
    lo, hi = difference_interval(0.68, 200, 0.32, 200)
    lo2, hi2 = difference_interval(0.80, 200, 0.78, 200)
    lo3, hi3 = difference_interval(0.80, 200, 0.80, 200)
    assert md[4] == (f"| vqa | position gap (image − text_first) | 0-shot | 0.360 [{lo:.2f}, {hi:.2f}]; seeds "
                     f"0.32, 0.40 | 0.020 [{lo2:.2f}, {hi2:.2f}]; seeds 0.02, 0.02 | 0.000 [{lo3:.2f}, {hi3:.2f}]; "
                     "seeds 0.00, 0.00 | - | - |")
    assert len(md) == 7 and "position gap: image-first minus text-first" in md[-1]
    console = Console(width=250, record=True)
    console.print(demo.summary_table(rows, num_seeds=2))
    text = console.export_text()
    assert "0-shot text_first" in text and "position gap (image − text_first)" in text and "0.360 [" in text
    (vqa,) = panels(rows, demo.figure_series)
    assert [(p.x, round(p.y, 6)) for p in vqa.series["frozen (text_first)"]] == [(0, 0.32)]
    assert [(p.x, round(p.y, 6)) for p in vqa.series["frozen"]] == [(0, 0.68)]
    preset = Path(demo.__file__).resolve().parents[1] / "conf" / "eval" / "demo.yaml"
    assert demo.later_model_conditions(preset) == [
        "eval.tasks.easyvqa_caption.conditions=[image]", "eval.tasks.easyvqa_vqa.conditions=[image,text_first]",
        "eval.tasks.easyvqa_binding.conditions=[image]"]
