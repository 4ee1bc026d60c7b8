"""frozen.eval.stats: intervals and tests checked against hand-worked values, seed aggregation."""

from __future__ import annotations

import math

import pytest

from frozen.eval.stats import aggregate_seeds, difference_interval, is_proportion, two_proportion_p, wilson_interval


def test_wilson_interval_hand_worked():
    # p = 0.5, n = 100, z = 1.96: centre = (0.5 + 0.019208) / 1.038415 = 0.5;
    # half = 1.96 / 1.038415 * sqrt(0.0025 + 0.00009604) = 0.096170 -> [0.403830, 0.596170]
    lo, hi = wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.40383, abs=1e-4) and hi == pytest.approx(0.59617, abs=1e-4)
    # p = 0 on 10 examples: the interval is [0, z^2 / (n + z^2)] = [0, 0.27753], not degenerate
    lo, hi = wilson_interval(0.0, 10)
    assert lo == 0.0 and hi == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(0.5, 0)
    with pytest.raises(ValueError):
        wilson_interval(1.5, 10)


def test_two_proportion_p_hand_worked():
    # 0.6 on 100 vs chance 0.5: z = 0.1 / 0.05 = 2 -> p = erfc(2 / sqrt 2) = 0.0455
    assert two_proportion_p(0.6, 100, 0.5) == pytest.approx(math.erfc(2 / math.sqrt(2)), rel=1e-9)
    assert two_proportion_p(0.6, 100, 0.5) < 0.05 < two_proportion_p(0.58, 100, 0.5)
    # 0.03 apart on 80 questions each is noise: pooled 0.415, se = sqrt(.415 * .585 * 2/80) = 0.07791
    p = two_proportion_p(0.43, 80, 0.40, 80)
    assert p == pytest.approx(math.erfc(0.03 / 0.077912 / math.sqrt(2)), rel=1e-3) and p > 0.5
    assert two_proportion_p(0.4, 80, 0.4, 80) == pytest.approx(1.0)


def test_aggregate_seeds_spread_and_interval():
    def row(mean, std, model="frozen", metric="vqa_accuracy"):
        return {"model": model, "task": "t", "metric": metric, "shots": 0, "condition": "image",
                "mean": mean, "stddev": std, "num_examples": 100, "num_trials": 2}

    per_seed = [[row(0.5, 0.02), row(3.0, 0.0, metric="cider")],
                [row(0.7, 0.04), row(4.0, 0.0, metric="cider")],
                [row(0.6, 0.00), row(5.0, 0.0, metric="cider")]]
    acc, cider = aggregate_seeds(per_seed)
    assert acc["mean"] == pytest.approx(0.6) and acc["seed_std"] == pytest.approx(0.1)  # sample std, ddof=1
    assert acc["trial_std"] == pytest.approx(0.02) and acc["num_seeds"] == 3
    assert acc["seed_means"] == [0.5, 0.7, 0.6] and "stddev" not in acc
    assert acc["ci95"] == pytest.approx(list(wilson_interval(0.6, 100)))
    assert cider["mean"] == pytest.approx(4.0) and "ci95" not in cider  # CIDEr is not a proportion
    with pytest.raises(ValueError, match="in 1 of 2 seeds"):
        aggregate_seeds([[row(0.5, 0.0)], [row(0.5, 0.0, model="frozen_vqa")]])
    empty = row(None, None) | {"num_examples": 0, "skipped": {"prompt_too_long": 100}}
    (cell,) = aggregate_seeds([[row(0.5, 0.02)], [empty]])  # one seed scored nothing: no mean, no crash
    assert cell["mean"] is None and cell["seed_std"] is None and cell["seed_means"] == [0.5, None]
    assert "ci95" not in cell and "stddev" not in cell


def test_is_proportion():
    assert is_proportion("vqa_accuracy[yes/no]") and is_proportion("accuracy")
    assert not is_proportion("cider") and not is_proportion("perplexity") and not is_proportion("bleu4")


def test_difference_interval_matches_newcombes_worked_examples():
    """Newcombe (1998), Stat. Med. 17:873, Table II, method 10 (hybrid score): 56/70 - 48/80 and 9/10 - 3/10."""
    lo, hi = difference_interval(56 / 70, 70, 48 / 80, 80)
    assert lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)
    lo, hi = difference_interval(0.9, 10, 0.3, 10)
    assert lo == pytest.approx(0.1705, abs=1e-4) and hi == pytest.approx(0.8090, abs=1e-4)
    assert difference_interval(1.0, 10, 0.0, 10)[1] == 1.0  # clipped to the range of a difference
    lo, hi = difference_interval(0.3, 80, 0.3, 80)
    assert lo == pytest.approx(-hi) and lo < 0 < hi  # symmetric around a zero difference
