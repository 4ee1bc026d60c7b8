"""Scoring details that move a published number: targets normalised like predictions, vqaEval.py's punctuation
quirks side by side with the official code, the bounds and edge cases of the statistics, and the errors'
messages."""

from __future__ import annotations

import pytest

from frozen.eval.metrics import (
    caption_scores,
    clean_whitespace,
    exact_match,
    mean_std,
    process_punctuation,
    ptb_tokenize,
    strict_match,
    vqa_accuracy,
)
from frozen.eval.stats import aggregate_seeds, chance, is_proportion, two_proportion_p, wilson_interval

# ------------------------------------------------------------------------------------------- naming


@pytest.mark.parametrize("prediction, target", [("dax", "Dax"), ("cat", "the cat"), ("2", "two"), ("dax", "Dax."),
                                                ("dont", "don't"), ("blicket", " a  blicket\n")])
def test_exact_match_normalises_the_target_too(prediction, target):
    """A target that needs normalising ("Dax", "the cat", "two") matches a prediction that normalises to it."""
    assert exact_match(prediction, target) == 1.0
    assert exact_match(target, prediction) == 1.0


def test_strict_match_strips_the_target():
    assert strict_match("dax", " dax ") == 1.0 and strict_match("dax wug", " dax ") == 0.0


# ------------------------------------------------------------------- vqaEval.py's punctuation quirks

# Inputs where processPunctuation's quirks show: it tests the *original* text for a mark touching a space
# (p + " " or " " + p) and for a digit-comma-digit, while it edits a copy; periods go unless a digit
# follows; at most 32 of them go.
QUIRKS = [
    "x-ray ;-)", "3,000", "a.b", "1,000 x-ray", "x -ray", "a? b-c", "red , blue-green", "yes; no-go",
    "(c) 2,5", "e.g.", "3.", "2.5", "a ?-b", "wi-fi?", "t-shirt / shorts", "4:30", "a@b", "1 ,2", "A.M.",
    "#1", "50%", "...", "hi!!", "a/b/c", "a / b/c", "\"a\" b\"c", "a_b _c", "{x}y", "[a] [b]", "<a>=b",
    "+1", "a+ b", "`a`", "back\\slash", "1,2,3", "1, 2", "x,y", "5 .5", ". " * 20 + "end", "a" + "." * 40,
    "don't", "it's-a", "'quoted'", "mr.smith", "no-1,000",
]


@pytest.fixture(scope="module")
def official():
    from official_vqaEval import _QA, VQAEval

    return VQAEval(_QA({}), _QA({}))


@pytest.mark.parametrize("text", QUIRKS)
def test_process_punctuation_equals_the_official_code_on_its_quirks(official, text):
    assert process_punctuation(text) == official.processPunctuation(text)


def test_the_quirks_change_scores_as_the_official_code_does(official):
    """Each quirk string against answers that agree with one reading or the other: equal floats."""
    from official_vqaEval import official_accuracy

    checked = 0
    for text in QUIRKS:
        fixed = " ".join(text.replace(";", " ").replace("-", " ").split())  # a "sensible" reading
        squeezed = text.replace("-", "").replace(",", "")
        for answers in ([text] * 3 + ["no"] * 7, [fixed] * 4 + [squeezed] * 6, [squeezed] * 3 + ["x"] * 7):
            for prediction in (text, fixed, squeezed):
                assert vqa_accuracy(prediction, answers) == official_accuracy(prediction, answers), (prediction,
                                                                                                      answers)
                checked += 1
    assert checked == 9 * len(QUIRKS)
    # the quirks at work: the hyphen of "x-ray ;-)" becomes a space (";" touches one, "-" does not) ...
    assert process_punctuation("x-ray ;-)") == "x ray   "
    # ... a digit-comma-digit anywhere deletes every mark, and a period before a letter goes
    assert process_punctuation("no-1,000") == "no1000" and process_punctuation("a.b") == "ab"
    assert vqa_accuracy("x ray", ["x-ray ;-)"] * 3 + ["no"] * 7) == pytest.approx(0.9)


def test_whitespace_inside_an_answer():
    assert clean_whitespace("red\nblue\tgreen ") == "red blue green"
    assert vqa_accuracy("red blue", ["red\nblue"] * 10) == 1.0  # unanimous: only this step runs
    assert vqa_accuracy("red blue", ["red\tblue"] * 10) == 1.0


def test_previous_revision_processes_split_answers_only():
    old = "458a8b2"
    assert vqa_accuracy("yes", ["yes."] * 10, revision=old) == 0.0  # unanimous: the answers stay raw
    assert vqa_accuracy("yes", ["yes."] * 9 + ["no"], revision=old) == 1.0


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match="^answers must be a list of ground-truth strings, not one string$"):
        vqa_accuracy("cat", "cat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^vqa_accuracy needs at least one ground-truth answer, got an empty list$"):
        vqa_accuracy("cat", [])
    with pytest.raises(ValueError, match=r"^unknown vqaEval.py revision 'x'; use one of a013f00, 458a8b2$"):
        vqa_accuracy("cat", ["cat"], revision="x")
    with pytest.raises(ValueError, match="^mean_std needs at least one value$"):
        mean_std([])


# ------------------------------------------------------------------------------------------ captions


def test_ptb_tokenize_edge_cases():
    assert ptb_tokenize("a\ndog") == "a dog"
    assert ptb_tokenize("n't") == "n't"  # a clitic alone is not split into an empty word and itself


def test_caption_scores_print_nothing(capsys):
    caption_scores({1: ["a cat on a mat"], 2: ["two dogs"]}, {1: ["a cat"], 2: ["two dogs run"]})
    assert capsys.readouterr().out == ""


def test_caption_errors_name_the_ids_and_the_caption():
    with pytest.raises(ValueError, match=r"only in gts: \['1', '2', '3', '4', '5'\], only in res: \['9'\]$"):
        caption_scores({i: ["a"] for i in range(1, 8)}, {9: ["a"]})
    with pytest.raises(ValueError, match=r"only in gts: \[\], only in res: \['10', '11', '12', '13', '14'\]$"):
        caption_scores({}, {i: ["a"] for i in range(10, 17)})
    with pytest.raises(ValueError, match="^caption_scores needs at least one image$"):
        caption_scores({}, {})
    with pytest.raises(TypeError, match=r"^gts\[1\]: expected a caption string or a \{'caption': str\} dict, got int$"):
        caption_scores({1: [3]}, {1: ["a cat"]})
    with pytest.raises(TypeError, match=r"^res\[1\]: expected a caption string .* got NoneType$"):
        caption_scores({1: ["a cat"]}, {1: [None]})


# -------------------------------------------------------------------------------------------- stats


def test_which_metrics_are_proportions():
    for metric in ("vqa_accuracy", "vqa_accuracy[other]", "accuracy", "accuracy_strict", "exact_match",
                   "strict_match"):
        assert is_proportion(metric), metric
    for metric in ("CIDEr", "BLEU-4", "loss", "perplexity", "Accuracy"):
        assert not is_proportion(metric), metric


def test_chance_levels():
    assert chance({"ways": 2, "metric": "accuracy"}) == 0.5 and chance({"ways": 5, "metric": "accuracy"}) == 0.2
    assert chance({"metric": "vqa_accuracy[yes/no]"}) == 0.5
    assert chance({"metric": "vqa_accuracy"}) is None and chance({"metric": "vqa_accuracy[other]"}) is None
    assert chance({"ways": 4, "metric": "vqa_accuracy[yes/no]"}) == 0.25  # an episode's ways come first


def test_wilson_interval_bounds_and_errors():
    lo, hi = wilson_interval(0.5, 1)  # n = 1 is allowed
    assert 0.0 < lo < 0.5 < hi < 1.0
    lo, hi = wilson_interval(1.0, 16)
    assert hi == 1.0 and lo < 1.0  # centre + half is 1 + 2e-16 here: clipped
    assert wilson_interval(0.0, 16)[0] == 0.0
    with pytest.raises(ValueError, match="^wilson_interval needs n >= 1, got 0$"):
        wilson_interval(0.5, 0)
    with pytest.raises(ValueError, match=r"^wilson_interval needs a proportion in \[0, 1\], got 1.5$"):
        wilson_interval(1.5, 10)
    with pytest.raises(ValueError, match=r"got -0.1$"):
        wilson_interval(-0.1, 10)


def test_two_proportion_p_without_spread():
    assert two_proportion_p(0.0, 10, 0.0, 10) == 1.0 and two_proportion_p(1.0, 10, 1.0, 10) == 1.0
    assert two_proportion_p(0.3, 10, 0.0) == 0.0  # against a chance level of 0 nothing else is possible
    assert two_proportion_p(0.0, 10, 0.0) == 1.0


def _row(mean, std=0.0, metric="accuracy_strict", n=64, **extra):
    return {"model": "frozen", "task": "binding", "metric": metric, "condition": "image", "ways": 2,
            "inner_shots": 1, "repeats": 0, "task_induction": False, "mean": mean, "stddev": std,
            "num_examples": n, "num_trials": 1, **extra}


def test_aggregated_strict_match_rows_carry_their_wilson_interval():
    (cell,) = aggregate_seeds([[_row(0.25)], [_row(0.35)]])
    assert cell["ci95"] == pytest.approx(list(wilson_interval(0.3, 64)))


def test_aggregate_seeds_edges():
    # the first seed's row gives the cell's other fields; the interval counts its examples
    (cell,) = aggregate_seeds([[_row(0.5, n=64, note="first")], [_row(0.5, n=32, note="second")]])
    assert cell["note"] == "first" and cell["ci95"] == pytest.approx(list(wilson_interval(0.5, 64)))
    for mean in (0.0, 1.0):  # the ends of a proportion still get an interval
        (cell,) = aggregate_seeds([[_row(mean)], [_row(mean)]])
        assert cell["ci95"] == pytest.approx(list(wilson_interval(mean, 64)))
    (cell,) = aggregate_seeds([[_row(1.5)], [_row(1.5)]])  # not a proportion after all (a percentage): none
    assert "ci95" not in cell
    (cell,) = aggregate_seeds([[_row(0.5, metric="CIDEr")], [_row(0.5, metric="CIDEr")]])
    assert "ci95" not in cell
    # a cell with no mean in one seed, followed by another cell: both come out, the first without a mean
    none = _row(None, n=0, note="none")
    del none["stddev"]  # a row that scored nothing may carry no spread
    first, second = aggregate_seeds([[none, _row(0.5, metric="accuracy")],
                                     [_row(0.5, note="a"), _row(0.7, metric="accuracy")]])
    assert first["note"] == "none" and first["mean"] is None and first["trial_std"] is None
    assert first["num_seeds"] == 2 and "stddev" not in first
    assert second["mean"] == pytest.approx(0.6) and second["num_seeds"] == 2
