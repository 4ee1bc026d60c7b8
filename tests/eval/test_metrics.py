"""Official VQA accuracy / normalisation (GT-Vision-Lab vqaEval.py) and pycocoevalcap BLEU/CIDEr."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest

from frozen.eval.metrics import (
    PTB_PUNCTUATIONS,
    caption_scores,
    exact_match,
    mean_std,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    ptb_tokenize,
    strict_match,
    vqa_accuracy,
)

# ---------------------------------------------------------------------------------------- VQA


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes.", "yes"),
        ("two", "2"),
        ("None", "0"),  # manualMap maps "none" to 0
        ("The Two dogs!", "2 dogs"),  # lower-case, number word, article dropped, "!" -> ""
        ("an apple", "apple"),
        ("dont", "don't"),
        ("Dont", "don't"),  # contractions apply after lower-casing
        ("Im", "im"),  # the capitalised keys of the table can never match
        (" a\tcat\n", "cat"),
        ("2.5", "2.5"),  # period followed by a digit stays
        ("yes/no", "yes no"),  # "/" touches no space: replaced by a space
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_punctuation_replaced_by_space_or_deleted_depending_on_whole_input():
    assert process_punctuation("x-ray") == "x ray"
    assert process_punctuation("x -ray") == "x ray"  # " -" occurs: deleted
    # A digit-comma-digit anywhere deletes every mark, here the hyphen too.
    assert process_punctuation("1,000 x-ray") == "1000 xray"
    # The condition is checked per mark on the original input: "?" touches a space, "-" does not.
    assert process_punctuation("a? b-c") == "a b c"


def test_period_strip_typo_and_count_quirks():
    # (?!<=\d) is not a lookbehind: a period after a digit is deleted too.
    assert process_punctuation("5.") == "5"
    assert process_punctuation("mr.smith") == "mrsmith"
    # re.UNICODE (32) passed as `count`: only 32 periods go.
    assert process_punctuation("." * 40) == "." * 8


def test_process_digit_article_collapses_whitespace():
    assert process_digit_article("A  Three   little pigs") == "3 little pigs"


def test_vqa_accuracy_hand_worked_values():
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("no", ["yes"] * 10) == 0.0
    # 2 matches of 10: leaving out a match leaves 1 (1/3, twice), leaving out another leaves 2 (2/3, 8x).
    assert vqa_accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("cat", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("cat", ["cat"] * 4 + ["dog"] * 6) == pytest.approx(1.0)
    assert vqa_accuracy("cat", ["cat"] + ["dog"] * 9) == pytest.approx(0.3)  # 9 x 1/3 / 10


def test_vqa_accuracy_unanimous_answers_path():
    """a013f00, ten identical answers (after newline/tab -> space and strip): no normalisation at
    all on either side, so only the exact string scores."""
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0  # whitespace step only
    assert vqa_accuracy("yes", ["yes "] * 9 + ["\tyes"]) == 1.0  # identical once stripped: unanimous
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0  # the trailing period costs the whole point
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0  # no lower-casing
    assert vqa_accuracy("two", ["2"] * 10) == 0.0  # no number words
    assert vqa_accuracy("a dog", ["dog"] * 10) == 0.0  # no article dropping
    assert vqa_accuracy("dont", ["don't"] * 10) == 0.0  # no contractions
    assert vqa_accuracy("yes.", ["yes."] * 10) == 1.0  # raw equality


def test_vqa_accuracy_split_answers_path():
    """a013f00, answers that differ: prediction and answers both go through processPunctuation then
    processDigitArticle before matching."""
    assert vqa_accuracy("Yes.", ["yes"] * 9 + ["no"]) == 1.0  # every leave-one-out keeps >= 8 matches
    assert vqa_accuracy("two", ["2"] * 9 + ["3"]) == 1.0
    assert vqa_accuracy("two", ["two"] * 9 + ["3"]) == 1.0  # answers are normalised too ("two" -> "2")
    assert vqa_accuracy("The dog!", ["dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9)
    # "dont" -> "don't" (contraction table); "don't" keeps its apostrophe (not in punct).
    assert vqa_accuracy("dont", ["don't"] * 2 + ["no"] * 8) == pytest.approx(0.6)
    # "-" touches no space in "x-ray": replaced by a space -> "x ray", which 4 answers hold.
    assert vqa_accuracy("x-ray", ["x ray"] * 4 + ["xray"] * 6) == 1.0
    # A digit-comma-digit deletes every mark instead: "1,000 x-ray" -> "1000 xray".
    assert vqa_accuracy("1,000 x-ray", ["1000 xray"] * 3 + ["no"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("None", ["0"] * 5 + ["1"] * 5) == 1.0  # manualMap: none -> 0


def test_vqa_accuracy_previous_revision_option():
    """458a8b2: the prediction is always normalised, the answers used raw (not even stripped) or,
    when they differ, through processPunctuation only."""
    old = "458a8b2"
    assert vqa_accuracy("yes.", ["yes"] * 10, revision=old) == 1.0
    assert vqa_accuracy("two", ["two"] * 10, revision=old) == 0.0  # "2" vs raw "two"
    assert vqa_accuracy("two", ["two"] * 9 + ["2"], revision=old) == pytest.approx(0.3)
    assert vqa_accuracy("yes", ["yes "] * 10, revision=old) == 0.0  # answers not stripped
    assert vqa_accuracy("yes", ["yes."] * 9 + ["no"], revision=old) == 1.0
    with pytest.raises(ValueError, match="unknown vqaEval.py revision"):
        vqa_accuracy("yes", ["yes"], revision="master")


def test_vqa_accuracy_fewer_answers_and_errors():
    assert vqa_accuracy("cat", ["cat"]) == 0.0  # nothing left after leaving the one answer out
    assert vqa_accuracy("cat", ["cat", "cat", "cat", "cat"]) == 1.0
    assert vqa_accuracy("cat", ["cat", "cat", "dog"]) == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("cat", [])
    with pytest.raises(TypeError):
        vqa_accuracy("cat", "cat")  # type: ignore[arg-type]


# Pieces the generated parity set is built from: case, punctuation (touching a space or not),
# digit-comma-digit, periods before/after digits, number words, articles, contractions, whitespace.
_PIECES = [
    "yes", "Yes", "YES", "no", "yes.", "no!", "two", "2", "Two", "none", "0", "ten", "10", "1,000", "1000",
    "2.5", "5.", "a", "an", "the", "The", "dog", "dogs", "a dog", "red", "x-ray", "x ray", "xray", "dont",
    "don't", "Dont", "isnt", "Im", "its", "it's", "yall", "?", "(red)", "red/blue", "blue;", "mr.smith",
    "hot dog", "hot-dog", "ow's'at", "somebody'd", "cant", "3:30", "'", "@home", "\"quoted\"",
    # where processPunctuation's quirks show (it tests the original text, not the edited copy)
    "x-ray ;-)", "3,000", "a.b", "no-1,000", "wi-fi?", "red , blue-green", "e.g.", "a ?-b",
]
_SPACES = ["", " ", "  ", "\n", "\t", " \n"]


def _phrase(rng) -> str:
    words = [rng.choice(_PIECES) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    return rng.choice(_SPACES) + rng.choice([" ", " ", "  ", "\t"]).join(words) + rng.choice(_SPACES)


def _parity_cases(n: int = 3000):
    import random

    rng = random.Random(12)
    for _ in range(n):
        base = [_phrase(rng) for _ in range(rng.choice([1, 2, 3, 4]))]
        kind = rng.random()
        if kind < 0.3:  # unanimous
            answers = [base[0]] * 10
        elif kind < 0.4:  # identical once stripped / unanimous up to whitespace
            answers = [rng.choice(_SPACES) + base[0].strip() + rng.choice(_SPACES) for _ in range(10)]
        else:
            answers = [rng.choice(base) for _ in range(rng.choice([10, 10, 10, 3, 5, 1]))]
        pool = base + answers + [_phrase(rng)]
        prediction = rng.choice(pool) if rng.random() < 0.8 else _phrase(rng)
        if rng.random() < 0.3:  # the same answer written differently
            variants = [str.upper, str.title, lambda s: s + ".", lambda s: "the " + s, lambda s: s + "\n"]
            prediction = rng.choice(variants)(prediction)
        yield prediction, answers


def test_vqa_accuracy_equals_official_code_side_by_side():
    """Each generated question scored by the official vqaEval.py (a013f00, tests/eval/official_vqaEval.py)
    and by vqa_accuracy: exactly equal floats, on unanimous and split answers alike."""
    from official_vqaEval import official_accuracy

    cases = list(_parity_cases())
    mismatches = [(p, a, official_accuracy(p, a), vqa_accuracy(p, a)) for p, a in cases
                  if official_accuracy(p, a) != vqa_accuracy(p, a)]
    assert mismatches == []
    # The set exercises every path: full and partial credit, unanimous and split answers, and
    # cases where the previous revision disagrees.
    scores = [vqa_accuracy(p, a) for p, a in cases]
    assert {0.0, 1.0} <= set(scores) and any(0 < s < 1 for s in scores)
    assert sum(len(set(a)) == 1 for _, a in cases) > 500 and sum(len(set(a)) > 1 for _, a in cases) > 1000
    assert sum(vqa_accuracy(p, a) != vqa_accuracy(p, a, revision="458a8b2") for p, a in cases) > 100


def test_strict_match_is_the_name_then_the_end():
    assert strict_match("dax", "dax") == strict_match(" dax. ", "dax") == strict_match("dax!", "dax") == 1.0
    for wrong in ("the dax", "a dax", "Dax", "dax and wug", "daxes", "dax..", "blicket", ""):
        assert strict_match(wrong, "dax") == 0.0, wrong
    assert exact_match("the dax", "dax") == 1.0 and strict_match("the dax", "dax") == 0.0  # where the two differ


def test_exact_match_and_mean_std():
    assert exact_match("Dax.", "dax") == 1.0
    assert exact_match("the dax", "dax") == 1.0
    assert exact_match("blicket", "dax") == 0.0
    assert exact_match("Dax and a wug", "dax") == 0.0
    mean, std = mean_std([1, 2, 3, 4])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))  # sample std, ddof=1
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


# ----------------------------------------------------------------------------------- Captions

CORPUS = [
    "A man's dog, running (fast) [sic] {x} \"quoted\" 'single' here.",
    "I don't can't won't cannot gonna wanna gotta.",
    "It's 3.5 m at 12:30, 1,000 people; U.S. Mr. Smith - black-and-white and/or 50% $5 r&b ... -- end!",
    "dogs' toys o'clock e-mail x--y red,white blue.green hi!! wait...",
    "Two dogs. Run A. B c A.B C",
    "A plate of food with broccoli, carrots, and rice.",
    'a black and white photo of a street sign that says "stop".',
    "There are 3 people on the 2-person bench...",
    "A sign reading: \"No parking\" at 5 p.m.",
    "Young boy (about 5 years old) playing baseball.",
    "Mrs. Jones and Dr. Who at St. Mary's etc.",
    "He said \u201chello\u201d and she\u2019s fine.",
]


def test_ptb_tokenize_known_outputs():
    assert ptb_tokenize("A man's dog, running.") == "a man 's dog running"
    assert ptb_tokenize("I don't know!") == "i do n't know"
    assert ptb_tokenize("It costs $5 (50%).") == "it costs $ 5 -lrb- 50 % -rrb-"
    assert ptb_tokenize("Mr. Smith met 1,000 people at 12:30.") == "mr. smith met 1,000 people at 12:30"


def test_punctuation_list_is_pycocoevalcaps():
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    assert PTB_PUNCTUATIONS == frozenset(PUNCTUATIONS)


@pytest.mark.skipif(shutil.which("java") is None, reason="needs java for the reference tokenizer")
def test_ptb_tokenize_matches_stanford_tokenizer(tmp_path):
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb

    jar = Path(ptb.__file__).with_name(ptb.STANFORD_CORENLP_3_4_1_JAR)
    src = tmp_path / "captions.txt"
    src.write_text("\n".join(CORPUS))
    cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(src)]
    lines = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout.split("\n")
    # The same post-processing as PTBTokenizer.tokenize.
    reference = [" ".join(w for w in line.rstrip().split(" ") if w not in ptb.PUNCTUATIONS) for line in lines]
    assert [ptb_tokenize(c) for c in CORPUS] == reference[: len(CORPUS)]


def test_caption_scores_identical_candidates():
    refs = {1: ["a cat sits on a mat"], 2: ["a dog runs in the park"], 3: ["two birds fly over water"]}
    res = {1: ["A cat sits on a mat."], 2: ["a dog runs in the park"], 3: [{"caption": "Two birds fly over water!"}]}
    scores = caption_scores(refs, res)
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr"}
    assert scores["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["CIDEr"] == pytest.approx(10.0)  # cosine 1 at every n, times CIDEr-D's factor 10


def test_caption_scores_known_bleu_values():
    # Candidate 4 tokens vs reference 5: all n-gram precisions 1, brevity penalty exp(1 - 5/4).
    s = caption_scores({0: ["a b c d e"]}, {0: ["a b c d"]})
    assert s["BLEU-4"] == pytest.approx(math.exp(-0.25), abs=1e-6)
    # Clipped unigram precision: "the" counts once against a reference holding it once.
    s = caption_scores({0: ["the cat is here"]}, {0: ["the the the the"]})
    assert s["BLEU-1"] == pytest.approx(0.25, abs=1e-6)


def test_cider_depends_on_corpus():
    assert caption_scores({1: ["a cat on a mat"]}, {1: ["a cat on a mat"]})["CIDEr"] == 0.0  # idf log(1/1)
    disjoint = caption_scores({1: ["a cat on a mat"], 2: ["dogs run"]}, {1: ["green trees"], 2: ["blue sky"]})
    assert disjoint["CIDEr"] == 0.0


def test_caption_scores_validates_inputs():
    with pytest.raises(ValueError, match="same ids"):
        caption_scores({1: ["a"], 2: ["b"]}, {1: ["a"]})
    with pytest.raises(ValueError, match="exactly one candidate"):
        caption_scores({1: ["a cat"]}, {1: ["a cat", "a dog"]})
    with pytest.raises(ValueError, match="exactly one candidate"):
        caption_scores({1: ["a cat"]}, {1: "a cat"})
    with pytest.raises(ValueError, match="non-empty list"):
        caption_scores({1: []}, {1: ["a cat"]})
    with pytest.raises(TypeError, match="caption string"):
        caption_scores({1: [3]}, {1: ["a cat"]})
