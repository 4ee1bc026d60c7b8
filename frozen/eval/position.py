"""The position check: does the model read its image when the image is not at position 0?

Training puts the visual prefix first (``[prefix][caption]``), while every few-shot prompt puts the query
image after text (the demonstrations). The ``text_first`` condition (``frozen.config.EVAL_CONDITIONS``) asks
the 0-shot VQA question with one fixed, neutral line of text before the image:

    image:       <image>Q: {question} A:
    text_first:  Answer the question about the picture.\\n<image>Q: {question} A:

and the **position gap** is image-first accuracy minus text-first accuracy on the same questions: near 0
when the prefix is read anywhere, large when the model only reads it at the start. This module owns the line
(:data:`POSITION_LINE`, recorded in results.json's ``templates``) and the gap (:func:`position_gaps`), which
``make demo``'s table and ``make compare``'s report show.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from frozen.core.results import Row
from frozen.eval.stats import difference_interval

TEXT_FIRST = "text_first"
POSITION_LINE = "Answer the question about the picture.\n"
"""The neutral line before the query image under ``text_first``: an instruction that holds for every VQA
question and names no answer. One constant: changing it changes what the check measures."""
GAP_METRIC = "vqa_accuracy"  # the gap is taken on overall VQA accuracy, not the answer-type splits
GAP_NAME = "position gap"
GAP_LABEL = f"{GAP_NAME} (image − text_first)"


def position_gaps(rows: Sequence[Row], column: Callable[[Row], str] = lambda r: "") -> dict[tuple[str, str], dict]:
    """``{(task, column(row)): gap}`` for every task with both an ``image`` and a ``text_first`` 0-shot
    ``vqa_accuracy`` row under the same column value (make demo: the model; one evaluation: "").

    A gap is ``{"mean", "ci95", "num_examples", "seed_gaps"}``: ``mean`` = image mean - text_first mean,
    ``ci95`` from :func:`frozen.eval.stats.difference_interval` on the two rows' ``num_examples``
    (None when a row has no examples), ``seed_gaps`` the gap per training seed when both rows have
    ``seed_means`` (make demo with several seeds), else None. A row without a mean has no gap.
    """
    found: dict[tuple[str, str], dict[str, Row]] = {}
    for row in rows:
        if row["metric"] == GAP_METRIC and row.get("shots", 0) == 0 and row.get("condition") in ("image", TEXT_FIRST):
            found.setdefault((row["task"], column(row)), {})[row["condition"]] = row
    out = {}
    for key, by in found.items():
        first, later = by.get("image"), by.get(TEXT_FIRST)
        if first is None or later is None or first.get("mean") is None or later.get("mean") is None:
            continue
        n1, n2 = int(first.get("num_examples") or 0), int(later.get("num_examples") or 0)
        seeds = (first.get("seed_means"), later.get("seed_means"))
        out[key] = {
            "mean": first["mean"] - later["mean"],
            "ci95": difference_interval(first["mean"], n1, later["mean"], n2) if n1 and n2 else None,
            "num_examples": n1,
            "seed_gaps": [a - b for a, b in zip(*seeds)] if all(seeds) and len(seeds[0]) == len(seeds[1]) else None,
        }
    return out


def gap_text(gap: dict[str, Any] | None) -> str:
    """``0.320 [0.17, 0.46]`` (95% interval), with ``; seeds 0.30, 0.34`` when measured per seed; ``-`` without."""
    if gap is None:
        return "-"
    text = f"{gap['mean']:.3f}"
    if gap["ci95"] is not None:
        text += " [{:.2f}, {:.2f}]".format(*gap["ci95"])
    if gap["seed_gaps"] and len(gap["seed_gaps"]) > 1:
        text += "; seeds " + ", ".join(f"{g:.2f}" for g in gap["seed_gaps"])
    return text
