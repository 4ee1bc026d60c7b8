"""Official metrics: VQA accuracy (GT-Vision-Lab/VQA ``vqaEval.py``), BLEU / CIDEr (pycocoevalcap).

(Over 300 lines because it restates the official data tables, ~60 lines of contractions and
punctuation, next to the code that uses them.)

VQA
    :func:`vqa_accuracy` reproduces ``vqaEval.py`` of GT-Vision-Lab/VQA
    (``PythonEvaluationTools/vqaEvaluation``) at its current master, commit a013f00 (2021), the
    evaluator behind the published VQAv2 / OK-VQA numbers, quirks included (each quirk is named
    where it is reproduced; tests/eval/official_vqaEval.py runs the original side by side). The
    previous revision (458a8b2) is an explicit option. The data tables below (contractions, number
    words, articles, punctuation) are those of that file. See docs/eval_metrics.md.

Naming tasks
    :func:`exact_match` (normalised) and :func:`strict_match` (the name, then the end of the answer).

Captions
    :func:`caption_scores` runs pycocoevalcap's own ``Bleu(4)`` and ``Cider`` scorers. Their usual
    front end, ``PTBTokenizer``, shells out to Java (Stanford CoreNLP 3.4.1); :func:`ptb_tokenize`
    re-implements what that pipeline produces for captions in Python (lower-casing, PTB token
    splitting, then dropping pycocoevalcap's ``PUNCTUATIONS``), so scores need no Java.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Sequence

# --------------------------------------------------------------------------------------------------
# VQA: the tables of vqaEval.py (facts, restated), then its two processing steps.
# --------------------------------------------------------------------------------------------------

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    # Sic: the official table maps this one backwards (apostrophe removed, not added).
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}
"""``contractions`` of vqaEval.py. Keys with capitals (``Im``, ``Ive``, ...) can never match because
words are lower-cased first; kept as in the original."""

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
"""``manualMap`` of vqaEval.py (note ``none`` -> ``0``)."""

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)
"""``punct`` of the current vqaEval.py. Neither ``'``, ``:`` nor ``.`` is in it (periods have their
own rule, apostrophes are left for the contractions)."""

# Sic: ``(?!<=\d)`` is a typo for the lookbehind ``(?<!\d)``. As written it is a negative lookahead
# for the two characters "<=" and a digit, which always succeeds in practice, so the rule is simply
# "delete a period that is not followed by a digit": "5." -> "5", "2.5" stays.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")

# Sic: the official call is ``periodStrip.sub("", outText, re.UNICODE)``, whose third positional
# argument is ``count``; re.UNICODE == 32, so at most 32 periods are deleted per string.
_PERIOD_STRIP_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """``processPunctuation`` of vqaEval.py.

    Each mark of :data:`PUNCTUATION` is deleted when it touches a space somewhere in the *input*
    (``p + ' '`` or ``' ' + p`` occurs) or when the input contains a digit-comma-digit anywhere;
    otherwise it is replaced by a space. So ``"x-ray"`` -> ``"x ray"`` but ``"1,000 x-ray"`` ->
    ``"1000 xray"``. Then up to 32 periods not followed by a digit are deleted.
    """
    out = text
    # Sic: the condition looks at the original text every time, not at the text edited so far.
    has_digit_comma = COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """``processDigitArticle`` of vqaEval.py: lower-case, split on whitespace, number words ->
    digits, drop articles, expand missing-apostrophe contractions (``dont`` -> ``don't``), re-join
    with single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def clean_whitespace(text: str) -> str:
    """The first step of ``VQAEval.evaluate`` for predictions and answers alike:
    ``text.replace('\\n', ' ').replace('\\t', ' ').strip()``."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """The full official normalisation: :func:`clean_whitespace`, :func:`process_punctuation`, then
    :func:`process_digit_article` (what ``vqaEval.py`` applies to both sides when the ten answers
    differ).

    >>> normalize_answer("Two dogs.")
    '2 dogs'
    """
    return process_digit_article(process_punctuation(clean_whitespace(text)))


VQA_EVAL_REVISIONS: tuple[str, ...] = ("a013f00", "458a8b2")
"""Revisions of ``vqaEval.py`` that :func:`vqa_accuracy` reproduces: ``a013f00`` (2021-03-11,
"Fixed processing answers bug", the current master, default) and ``458a8b2`` (2016-10-08, the
revision before it, which many older repositories copied)."""


def vqa_accuracy(prediction: str, answers: Sequence[str], *, revision: str = "a013f00") -> float:
    """Per-question VQA accuracy in [0, 1], exactly as ``VQAEval.evaluate`` at ``revision``.

    Current official code (``a013f00``, the default), step by step:

    1. every answer and the prediction: :func:`clean_whitespace` (newline/tab -> space, strip);
    2. if the (cleaned) answers are all identical, nothing else is done to either side, so
       ``"yes."`` against ten ``"yes"`` scores 0 and ``"two"`` against ten ``"2"`` scores 0;
    3. otherwise both sides go through :func:`process_punctuation` then :func:`process_digit_article`;
    4. for each answer in turn, that answer is left out and the prediction scores
       ``min(1, matches among the other answers / 3)``; the result is the mean of these scores.

    ``revision="458a8b2"`` is the previous official revision: the prediction is always fully
    normalised (:func:`normalize_answer`); the answers are used as stored (not even stripped), and
    only when they differ each goes through :func:`process_punctuation` (no lower-casing, no
    number/article step). Step 4 is the same.

    With 10 answers, 3 matches give (3 * 2/3 + 7 * 1) / 10 = 0.9. Fewer answers use the same
    leave-one-out mean over what there is, so a single answer always scores 0 (nothing is left to
    match) and fewer than four can never reach 1; use :func:`exact_match` for single-answer tasks.
    """
    if isinstance(answers, str):
        raise TypeError("answers must be a list of ground-truth strings, not one string")
    if len(answers) == 0:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer, got an empty list")
    if revision == "a013f00":
        pred, gts = clean_whitespace(prediction), [clean_whitespace(a) for a in answers]
        if len(set(gts)) > 1:
            pred = process_digit_article(process_punctuation(pred))
            gts = [process_digit_article(process_punctuation(a)) for a in gts]
    elif revision == "458a8b2":
        pred, gts = normalize_answer(prediction), list(answers)
        if len(set(gts)) > 1:
            gts = [process_punctuation(a) for a in gts]
    else:
        raise ValueError(f"unknown vqaEval.py revision {revision!r}; use one of {', '.join(VQA_EVAL_REVISIONS)}")
    # The official code leaves out one answer *dict* (``item != gtAnsDatum``); each dict carries a
    # distinct answer_id, so exactly one entry goes even when several share a text: by position here.
    matches = sum(1 for a in gts if a == pred)
    scores = [min(1, (matches - (gt == pred)) / 3) for gt in gts]
    return float(sum(scores)) / len(scores)


def exact_match(prediction: str, target: str) -> float:
    """1.0 when both strings are equal after :func:`normalize_answer`, else 0.0 (naming tasks:
    ``"Dax."`` matches ``"dax"``; ``"the dax"`` matches too, since articles are dropped)."""
    return float(normalize_answer(prediction) == normalize_answer(target))


_END_OF_ANSWER = re.compile(r"\s*[.!]?\s*")


def strict_match(prediction: str, target: str) -> float:
    """1.0 when the answer is the name and then ends, else 0.0: case-sensitive, no article dropping,
    no number words; only surrounding whitespace and one final ``.`` or ``!`` may follow
    (``"dax"``, ``"dax."`` match ``"dax"``; ``"Dax"``, ``"the dax"``, ``"dax and wug"`` do not)."""
    text = prediction.strip()
    if not text.startswith(target.strip()):
        return 0.0
    return float(_END_OF_ANSWER.fullmatch(text[len(target.strip()):]) is not None)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of ``values``, e.g. accuracies over seeds.

    One value gives a std of 0.0 (``ddof=0``) rather than NaN, so a single run still reports.
    Raises on an empty input.
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_std needs at least one value")
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


# --------------------------------------------------------------------------------------------------
# Captions: a Python stand-in for pycocoevalcap's PTBTokenizer (Java), then Bleu(4) and Cider.
# --------------------------------------------------------------------------------------------------

PTB_PUNCTUATIONS: frozenset[str] = frozenset(
    {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
)
"""``PUNCTUATIONS`` of pycocoevalcap/tokenizer/ptbtokenizer.py: tokens dropped after tokenising.

Sic: the Java tokenizer runs with ``-lowerCase``, which also lower-cases its bracket tokens, so
``-lrb-`` / ``-rrb-`` etc. never match the upper-case entries and stay in the captions."""

# Brackets become PTB escape tokens (already lower-cased, see PTB_PUNCTUATIONS).
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# Words the PTB lexer splits in two.
_SPLIT_WORDS = {
    "cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
    "wanna": ("wan", "na"), "gimme": ("gim", "me"), "lemme": ("lem", "me"),
}
# Common abbreviations that keep their final period (a subset of the lexer's list).
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "inc", "co", "mt", "prof", "ltd"})
_CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m")
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
_PTB_TOKEN = re.compile(
    r"""
      (?P<word>\w+(?:(?:[-./?!']|(?<=\d)[,:](?=\d))\w+)*)(?P<dot>\.(?!\.))?  # 10-year-old, 3.5, dog's, u.s.
    | (?P<clitic>'(?:em|cause|s|re|ve|ll|d|m)\b)                             # kept whole by the lexer
    | \.\.\. | --+ | [?!]+                                                 # multi-character marks
    | \S                                                                   # anything else, alone
    """,
    re.VERBOSE,
)


def _split_clitics(word: str) -> list[str]:
    """``won't've`` -> ``wo n't 've``; ``o'clock`` stays whole."""
    tail: list[str] = []
    while True:
        for clitic in _CLITICS:
            if word.endswith(clitic) and len(word) > len(clitic):
                word, tail = word[: -len(clitic)], [clitic, *tail]
                break
        else:
            return [word, *tail]


def ptb_tokenize(caption: str) -> str:
    """What pycocoevalcap's ``PTBTokenizer`` (Stanford PTBTokenizer, ``-preserveLines -lowerCase``,
    then ``PUNCTUATIONS`` removed) produces for one caption: tokens joined by single spaces.

    Matches the Java tokenizer on ordinary captions (clitics ``do n't`` / ``dog 's``, split-off
    punctuation, ``$ 5``, ``50 %``, numbers like ``1,000`` / ``3.5`` / ``12:30``, hyphenated words,
    abbreviations like ``mr.`` / ``u.s.``, brackets -> ``-lrb-``). Rare constructs may differ (e.g.
    ``rock'n'roll``, ``5:00pm``, ``@handles``, currency symbols other than ``$``).

    >>> ptb_tokenize("A man's dog, running.")
    "a man 's dog running"
    """
    text = caption.replace("\n", " ").lower().translate(_QUOTES)
    tokens: list[str] = []
    for chunk in text.split():
        for m in _PTB_TOKEN.finditer(chunk):
            word = m.group("word")
            if word is None:
                tok = m.group(0)
                tokens.append(_BRACKETS.get(tok, "''" if tok == '"' else tok))
                continue
            # A final period stays on initials, dotted acronyms and known abbreviations.
            keep_dot = m.group("dot") is not None and (len(word) == 1 or "." in word or word in _ABBREVIATIONS)
            if keep_dot:
                tokens.append(word + ".")
            elif word in _SPLIT_WORDS:
                tokens.extend(_SPLIT_WORDS[word])
            else:
                tokens.extend(_split_clitics(word))
            if m.group("dot") is not None and not keep_dot:
                tokens.append(".")
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATIONS)


def _caption_text(item: object, where: str) -> str:
    # COCO annotation lists hold {"caption": ...} dicts; plain strings are accepted as well.
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping) and isinstance(item.get("caption"), str):
        return item["caption"]
    raise TypeError(f"{where}: expected a caption string or a {{'caption': str}} dict, got {type(item).__name__}")


def caption_scores(gts: Mapping[object, Sequence[object]], res: Mapping[object, Sequence[object]]) -> dict[str, float]:
    """Corpus BLEU-1..4 and CIDEr (pycocoevalcap ``Bleu(4)``, ``Cider``) of candidate captions.

    ``gts = {image_id: [reference, ...]}`` and ``res = {image_id: [candidate]}`` (pycocoevalcap's
    convention: exactly one candidate per id, the same ids on both sides); captions are strings or
    ``{"caption": str}`` dicts. Every caption goes through :func:`ptb_tokenize` first, as
    pycocoevalcap's ``PTBTokenizer`` would. Returns ``{"BLEU-1", ..., "BLEU-4", "CIDEr"}``.

    CIDEr's document frequencies (idf) come from the references of the corpus given: scores depend
    on the whole set, and a one-image corpus always scores CIDEr 0 (every n-gram has idf log(1/1)).
    Score a split in one call, not image by image.
    """
    if set(gts) != set(res):
        only_gts, only_res = sorted(map(str, set(gts) - set(res))), sorted(map(str, set(res) - set(gts)))
        raise ValueError(
            f"gts and res must have the same ids; only in gts: {only_gts[:5]}, only in res: {only_res[:5]}"
        )
    if not gts:
        raise ValueError("caption_scores needs at least one image")
    tok_gts: dict[object, list[str]] = {}
    tok_res: dict[object, list[str]] = {}
    for key in gts:
        refs, cands = gts[key], res[key]
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"gts[{key!r}] must be a non-empty list of reference captions")
        if isinstance(cands, str) or len(cands) != 1:
            raise ValueError(f"res[{key!r}] must be a list with exactly one candidate caption, got {cands!r}")
        tok_gts[key] = [ptb_tokenize(_caption_text(r, f"gts[{key!r}]")) for r in refs]
        tok_res[key] = [ptb_tokenize(_caption_text(cands[0], f"res[{key!r}]"))]

    from pycocoevalcap.bleu.bleu import Bleu  # imported here: only caption scoring needs it
    from pycocoevalcap.cider.cider import Cider

    bleu, _ = Bleu(4).compute_score(tok_gts, tok_res, verbose=0)
    cider, _ = Cider().compute_score(tok_gts, tok_res)
    scores = {f"BLEU-{n}": float(b) for n, b in enumerate(bleu, start=1)}
    scores["CIDEr"] = float(cider)
    return scores
