"""What ``make demo`` (scripts/demo.py) reports: its two models, where each training seed's runs live,
the merged rows of both models' evaluations, the summary table (console and Markdown) and the figure (fewshot.png).
The position check (``text_first``, :mod:`frozen.eval.position`) is each model's own row, with the position gap
(image first minus text first, 0-shot VQA) as a derived line of the table.

Text-only rows are computed once per seed: without an image, both models are the same frozen LM on the same
text, so their text-only numbers are identical by construction (and identical across training seeds).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from frozen.core.results import RESULTS_NAME, console_table, markdown_table, read_rows, setting_label
from frozen.eval.plots import draw, panels
from frozen.eval.position import GAP_LABEL, GAP_METRIC, TEXT_FIRST, gap_text, position_gaps
from frozen.eval.stats import chance, is_proportion, two_proportion_p

MODELS = {"frozen": "demo_frozen", "frozen_vqa": "demo_frozen_vqa", "frozen_textmix": "demo_frozen_textmix"}
# frozen_vqa and frozen_textmix fine-tune frozen's trained encoder + mapper (the same data, other row layouts)
INIT_FROM = {"frozen_vqa": "frozen", "frozen_textmix": "frozen"}
TEXT_ONLY = "no_image"  # the text-only LM condition: no image, no prefix anywhere in the prompt


def seed_dir(out: Path, seed: int) -> Path:
    """Where training seed ``seed`` keeps its runs: seed 0 in ``out`` itself (what `make app` loads by default)."""
    return out if seed == 0 else out / f"seed{seed}"


def is_text_only(condition: str) -> bool:
    return condition == TEXT_ONLY


def later_model_conditions(preset: Path) -> list[str]:
    """Hydra overrides for every model after the first: each task of the eval preset (conf/eval/demo.yaml)
    with its conditions less ``no_image`` (computed once, with the first model); ``text_first`` stays."""
    tasks = yaml.safe_load(Path(preset).read_text())["tasks"]
    return [f"eval.tasks.{name}.conditions=[{','.join(c for c in task['conditions'] if not is_text_only(c))}]"
            for name, task in tasks.items()]


def merged_rows(out: Path) -> list[dict]:
    """All rows with a "model" field; text-only rows (computed with the first model) copied to both."""
    rows = []
    first = read_rows(out / "eval" / "frozen" / RESULTS_NAME)
    text_only = [r for r in first if is_text_only(r["condition"])]
    for model in MODELS:
        own = read_rows(out / "eval" / model / RESULTS_NAME)
        own = [r for r in own if not is_text_only(r["condition"])]
        shared = [dict(r, note="identical for both models: no image reaches the trained encoder") for r in text_only]
        rows += [dict(r, model=model) for r in own + shared]
    return rows


def figure_series(row: dict) -> str:
    """A line or bar of the demo's figure: the model (its image condition), and the shared ``no_image``."""
    if is_text_only(row["condition"]):
        return TEXT_ONLY
    return row["model"] if row["condition"] == "image" else f"{row['model']} ({row['condition']})"


def demo_figure(rows: list[dict], path: Path, num_seeds: int) -> Path | None:
    """``outputs/demo/fewshot.png``: per task, both models and no_image on the same axes, from the aggregated
    rows (several seeds: mean over training seeds; whiskers: the 95% interval, or ± std over the seeds)."""
    over = f"mean of {num_seeds} training seeds" if num_seeds > 1 else "training seed 0"
    title = f"make demo: {' vs '.join(MODELS)} on easy-VQA ({over})"
    return draw(panels(rows, figure_series, order=[*MODELS, TEXT_ONLY]), path, title=title)


COLUMNS = ("task", "metric", "setting", *MODELS, TEXT_ONLY, "chance")
TITLE = "make demo: easy-VQA, frozen SmolLM2-135M-Instruct, vision encoder trained from scratch"


def summary_cells(rows: list[dict], num_seeds: int) -> tuple[list[list[str]], str]:
    """One line per (task, metric, setting): frozen, frozen_vqa, no_image, chance; and the caption.

    A cell is ``mean ± std over training seeds`` (one seed: ``± std over evaluation trials``) and, for
    accuracy cells, its Wilson 95% interval; ``*`` marks a cell that differs from the no-image cell and
    ``°`` one that differs from chance (two-sided z-test, p < 0.05; frozen.eval.stats).

    A condition other than the image and text-only ones (``text_first``) gets its own line, ``0-shot text_first``,
    marked against the same no-image cell; after the 0-shot ``text_first`` line of ``vqa_accuracy``, the position
    gap per model (:func:`frozen.eval.position.position_gaps`).
    """
    spread = f"± std over {num_seeds} training seeds" if num_seeds > 1 else "± std over evaluation trials"
    caption = (f"mean {spread}; [Wilson 95% interval]; * differs from no_image, ° differs from chance (p < 0.05); "
               "position gap: image-first minus text-first accuracy [Newcombe 95% interval]"
               + ("; seeds: the gap per training seed" if num_seeds > 1 else ""))
    keyed: dict[tuple[str, str, str], dict[str, dict]] = {}
    for r in rows:  # (task, metric, setting [+ condition]) -> {model or no_image: row}
        where = setting_label(r) + ("" if r["condition"] == "image" or is_text_only(r["condition"])
                                    else f" {r['condition']}")
        keyed.setdefault((r["task"], r["metric"], where), {})[TEXT_ONLY if is_text_only(r["condition"])
                                                             else r["model"]] = r
    gaps = position_gaps(rows, lambda r: r["model"])

    def cell(r, base, level):
        if r is None or r["mean"] is None:  # no row, or every item skipped (the row's "skipped" says why)
            return "-"
        std = r["seed_std"] if num_seeds > 1 else r["trial_std"]
        text = f"{r['mean']:.3f} ± {std:.3f}"
        if "ci95" in r:
            text += " [{:.2f}, {:.2f}]".format(*r["ci95"])
        if is_proportion(r["metric"]) and r is not base:
            n = int(r["num_examples"])
            if (base is not None and base["mean"] is not None
                    and two_proportion_p(r["mean"], n, base["mean"], int(base["num_examples"])) < 0.05):
                text += "*"
            if level is not None and two_proportion_p(r["mean"], n, level) < 0.05:
                text += "°"
        return text

    lines = []
    for (task, metric, where), by in keyed.items():
        first = next(iter(by.values()))
        level = chance(first)
        base = keyed.get((task, metric, setting_label(first)), {}).get(TEXT_ONLY)  # text_first: the plain setting's
        lines.append(
            [
                task,
                metric,
                where,
                *(cell(by.get(m), base, level) for m in MODELS),
                cell(base, base, level),
                "-" if level is None else f"{level:.3f}",
            ]
        )
        if metric == GAP_METRIC and where == f"0-shot {TEXT_FIRST}":
            lines.append([task, GAP_LABEL, "0-shot", *(gap_text(gaps.get((task, m))) for m in MODELS), "-", "-"])
    return lines, caption


def summary_table(rows: list[dict], num_seeds: int):
    """:func:`summary_cells` as a rich table (the console)."""
    lines, caption = summary_cells(rows, num_seeds)
    return console_table(COLUMNS, lines, title=TITLE, caption=caption)


def summary_markdown(rows: list[dict], num_seeds: int) -> str:
    """:func:`summary_cells` as a Markdown table (outputs/demo/results.md, pasted into README and docs/demo.md)."""
    lines, caption = summary_cells(rows, num_seeds)
    return markdown_table(COLUMNS, lines, caption)
