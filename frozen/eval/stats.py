"""Spread and significance for results tables: over training seeds, and against chance / no image.

A results cell is a mean over ``n`` scored examples (and over seeded evaluation trials, which resample
demonstrations for the *same* examples, so they are not independent draws: ``n`` counts examples
once). Two questions a reader asks of a cell:

* How much does it move with the training seed?  -> :func:`aggregate_seeds` (mean and sample std over
  seeds of each seed's trial mean; the evaluation-trial spread is kept beside it).
* Is it different from chance or from the text-only baseline, or is 0.03 on 80 questions noise?
  -> :func:`wilson_interval` (95% interval of a proportion) and :func:`two_proportion_p` (two-sided
  z-test). Both treat the score as a proportion of ``n`` examples: exact for exact-match metrics,
  approximate for VQA accuracy (a question scores 0, 1/3, 2/3 or 1), meaningless for CIDEr
  (:data:`PROPORTION_METRICS` says which metrics get an interval).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from frozen.core.results import SETTING_KEYS
from frozen.eval.metrics import mean_std

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def is_proportion(metric: str) -> bool:
    """Metrics that are a mean of per-example scores in [0, 1] (accuracy-like), unlike CIDEr/BLEU/perplexity."""
    return metric.startswith(("vqa_accuracy", "accuracy", "exact_match", "strict_match"))


def chance(row: dict[str, Any]) -> float | None:
    """A row's chance level where one is defined: 1/ways for naming episodes (binding, deepmind: the answer
    is one of ``ways`` names), 0.5 for yes/no questions (``vqa_accuracy[yes/no]``); None otherwise."""
    if "ways" in row:
        return 1 / row["ways"]
    return 0.5 if row["metric"] == "vqa_accuracy[yes/no]" else None


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` examples (95% by default).

    Unlike the normal ``p ± z*sqrt(p(1-p)/n)`` it stays inside [0, 1] and is not degenerate at p = 0 or 1.
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs n >= 1, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"wilson_interval needs a proportion in [0, 1], got {p}")
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p(p1: float, n1: int, p2: float, n2: int | None = None) -> float:
    """Two-sided p-value that proportions ``p1`` (on ``n1``) and ``p2`` differ (pooled z-test).

    ``n2=None`` compares with a known constant ``p2`` (chance): a one-sample z-test.
    """
    if n2 is None:
        se = math.sqrt(p2 * (1 - p2) / n1)
    else:
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        return 1.0 if p1 == p2 else 0.0
    return math.erfc(abs(p1 - p2) / se / math.sqrt(2))


def aggregate_seeds(
    per_seed: Sequence[Sequence[dict[str, Any]]],
    key_fields: Iterable[str] = ("model", "task", "metric", "condition", *SETTING_KEYS),
) -> list[dict[str, Any]]:
    """Rows of several training seeds -> one row per cell with the spread over seeds.

    ``per_seed[s]`` is seed ``s``'s list of result rows (a cell is identified by ``key_fields``: the model,
    task, metric, condition and the row's settings; each row has ``mean``, ``stddev`` over evaluation
    trials, ``num_examples``, ``num_trials``). A cell's output row: ``mean`` and ``seed_std`` (sample std
    over seeds of the per-seed means), ``trial_std`` (the evaluation-trial std averaged over seeds),
    ``num_seeds``, ``seed_means``, and for proportion metrics ``ci95`` (Wilson, on ``num_examples``).
    Raises if a cell is missing from some seed: a silent partial mean would be a different number; for
    the same reason a cell with a seed whose ``mean`` is None (every item skipped) has ``mean`` None.
    """
    key_fields = tuple(key_fields)
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for rows in per_seed:
        for row in rows:
            cells.setdefault(tuple(row.get(k) for k in key_fields), []).append(row)
    out = []
    for key, rows in cells.items():
        if len(rows) != len(per_seed):
            raise ValueError(f"cell {dict(zip(key_fields, key))} is in {len(rows)} of {len(per_seed)} seeds' results")
        if any(r["mean"] is None for r in rows):  # a seed where no item fitted the LM: no mean for the cell
            out.append(dict(rows[0]) | {"mean": None, "seed_std": None, "trial_std": None, "num_seeds": len(rows),
                                        "seed_means": [r["mean"] for r in rows]})
            out[-1].pop("stddev", None)
            continue
        means = [float(r["mean"]) for r in rows]
        mean, seed_std = mean_std(means)
        row = dict(rows[0]) | {
            "mean": mean,
            "seed_std": seed_std,
            "trial_std": sum(float(r["stddev"]) for r in rows) / len(rows),
            "num_seeds": len(rows),
            "seed_means": means,
        }
        row.pop("stddev", None)
        if is_proportion(row["metric"]) and 0.0 <= mean <= 1.0 and row.get("num_examples"):
            row["ci95"] = list(wilson_interval(mean, int(row["num_examples"])))
        out.append(row)
    return out


def difference_interval(p1: float, n1: int, p2: float, n2: int) -> tuple[float, float]:
    """95% interval of ``p1 - p2`` (proportions on ``n1`` and ``n2`` examples): Newcombe's hybrid score
    interval, built from each proportion's :func:`wilson_interval` (stays inside [-1, 1], not degenerate
    at 0 or 1). It treats the two as independent samples; for two conditions scored on the same questions
    (positively correlated) it is conservative: wider than a paired interval would be.
    """
    lo1, hi1 = wilson_interval(p1, n1)
    lo2, hi2 = wilson_interval(p2, n2)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - lo1) ** 2 + (hi2 - p2) ** 2)
    high = diff + math.sqrt((hi1 - p1) ** 2 + (p2 - lo2) ** 2)
    return max(-1.0, low), min(1.0, high)
