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
    assert vqa_accuracy("Yes.", ["yes"] * 10) == 1.0
    assert vqa_accuracy("no", ["yes"] * 10) == 0.0
    # 2 matches of 10: leaving out a match leaves 1 (1/3, twice), leaving out another leaves 2 (2/3, 8x).
    assert vqa_accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("cat", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("cat", ["cat"] * 4 + ["dog"] * 6) == pytest.approx(1.0)
    assert vqa_accuracy("cat", ["cat"] + ["dog"] * 9) == pytest.approx(0.3)  # 9 x 1/3 / 10


def test_vqa_accuracy_number_words_articles_contractions():
    assert vqa_accuracy("two", ["2"] * 10) == 1.0
    assert vqa_accuracy("a dog", ["dog"] * 10) == 1.0
    assert vqa_accuracy("dont know", ["don't know"] * 10) == 1.0


def test_vqa_accuracy_single_unique_gt_is_used_raw():
    # One unique ground truth: not processed at all, so "yes." never matches the normalised "yes".
    assert vqa_accuracy("yes.", ["yes."] * 10) == 0.0
    # Several unique ground truths: processPunctuation is applied ("yes." -> "yes").
    assert vqa_accuracy("yes", ["yes."] * 9 + ["no"]) == 1.0
    # ... but not processDigitArticle: "two" stays "two" while the prediction becomes "2".
    assert vqa_accuracy("two", ["two"] * 10) == 0.0
    assert vqa_accuracy("two", ["two"] * 9 + ["2"]) == pytest.approx(0.3)


def test_vqa_accuracy_fewer_answers_and_errors():
    assert vqa_accuracy("cat", ["cat"]) == 0.0  # nothing left after leaving the one answer out
    assert vqa_accuracy("cat", ["cat", "cat", "cat", "cat"]) == 1.0
    assert vqa_accuracy("cat", ["cat", "cat", "dog"]) == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("cat", [])
    with pytest.raises(TypeError):
        vqa_accuracy("cat", "cat")  # type: ignore[arg-type]


def test_exact_match_and_mean_std():
    assert exact_match("Dax.", "dax") == 1.0
    assert exact_match("the dax", "dax") == 1.0
    assert exact_match("blicket", "dax") == 0.0
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
