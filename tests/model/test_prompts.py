"""Prompts as data: parsing <image> markers into segments, joining prompts, tokenising, shot sampling."""

from __future__ import annotations

import pytest

from frozen.core.tiny import tiny_tokenizer
from frozen.model.prompts import Prompt, query_rng, render, sample_shots, split_prompt

A, B, C = object(), object(), object()  # stand-in images: a Prompt only carries them


class CharTokenizer:
    """One token per character (its code point); records every string it is asked to tokenise."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, text, add_special_tokens=True):
        assert add_special_tokens is False  # a prompt segment never gets BOS/EOS
        self.calls.append(text)
        return type("Encoding", (), {"input_ids": [ord(c) for c in text]})()


def test_split_prompt_counts_markers():
    assert split_prompt("<image>x<image>", 2) == ["", "x", ""]
    with pytest.raises(ValueError, match=r"prompt has 2 <image> marker\(s\) but 1 image\(s\) were given"):
        split_prompt("<image>a <image>b", 1)


def test_parse_gives_segments_around_images():
    p = Prompt.parse("<image>This is a dax.\n<image>Q: What is this? A:", [A, B])
    assert p.texts == ("", "This is a dax.\n", "Q: What is this? A:")
    assert p.images == (A, B) and p.num_images == 2
    assert p.text == "<image>This is a dax.\n<image>Q: What is this? A:"
    text_only = Prompt.parse("Q: what color? A:")
    assert text_only.texts == ("Q: what color? A:",) and text_only.images == ()
    assert Prompt().texts == ("",) and Prompt().images == ()


def test_concat_joins_the_texts_where_prompts_meet():
    support = Prompt.parse("Answer.\n<image>This is a ", [A])
    query = Prompt.parse("dax.\n<image>Q: What is this?", [B])
    full = Prompt.concat(support, query)
    assert full.texts == ("Answer.\n", "This is a dax.\n", "Q: What is this?")
    assert full.images == (A, B)
    assert (support + query).texts == full.texts
    # the string form of a concatenation is the concatenation of the string forms
    assert full.text == support.text + query.text
    # a query starting with an image adds a segment; the empty prompt changes nothing
    assert (support + Prompt.parse("<image>", [C])).texts == ("Answer.\n", "This is a ", "")
    assert Prompt.concat(Prompt(), full, Prompt()).texts == full.texts
    assert Prompt.concat(support, Prompt.parse("x"), query).text == (
        "Answer.\n<image>This is a xdax.\n<image>Q: What is this?")


def test_prompt_errors_are_one_line():
    with pytest.raises(ValueError, match=r"one more text segment than images, got 2 texts and 0 images"):
        Prompt(("a", "b"), ())
    with pytest.raises(ValueError, match=r"cannot contain <image>; use Prompt.parse"):
        Prompt(("a <image> b",), ())
    with pytest.raises(ValueError, match=r"2 <image> marker\(s\) but 1 image"):
        Prompt.parse("<image><image>", [A])


def test_layout_puts_image_slots_between_segment_tokens():
    tok = CharTokenizer()
    # image i -> -(i + 1); text -> one id per character here
    assert Prompt.parse("ab<image>c", [A]).tokenize(tok).layout() == [97, 98, -1, 99]
    assert Prompt.parse("<image>a<image>", [A, B]).tokenize(tok).layout() == [-1, 97, -2]
    assert Prompt.parse("<image><image>", [A, B]).tokenize(tok).layout() == [-1, -2]
    assert tok.calls == ["ab", "c", "a"]  # empty segments are not sent to the tokenizer


def test_join_retokenises_only_the_seam():
    tok = CharTokenizer()
    support = Prompt.parse("xy<image>a ", [A]).tokenize(tok)
    query = Prompt.parse("b<image>z", [B]).tokenize(tok)
    tok.calls.clear()
    joined = support.join(query, tok)
    assert tok.calls == ["a b"]  # the two prompts' other segments keep their ids
    assert joined.prompt.texts == ("xy", "a b", "z") and joined.prompt.images == (A, B)
    assert joined.layout() == [120, 121, -1, 97, 32, 98, -2, 122]
    # nothing to re-tokenise when one side of the seam is empty
    tok.calls.clear()
    support.join(Prompt.parse("<image>", [B]).tokenize(tok), tok)
    Prompt.parse("<image>", [A]).tokenize(tok).join(query, tok)
    assert tok.calls == []


def test_join_equals_tokenising_the_whole_prompt_across_a_bpe_merge():
    """Byte-level BPE: "This is a " ends with the token " ", but "This is a dax" has " dax"."""
    tok = tiny_tokenizer()
    support = Prompt.parse("<image>This is a blicket.\n<image>This is a ", [A, B])
    for query in [Prompt.parse("dax.\n<image>Q: What is this?", [C]), Prompt.parse("<image>Q:", [C]),
                  Prompt.parse("dax"), Prompt()]:
        joined = support.tokenize(tok).join(query.tokenize(tok), tok)
        whole = (support + query).tokenize(tok)
        assert joined.ids == whole.ids and joined.layout() == whole.layout()
    merged = support.tokenize(tok).join(Prompt.parse("dax").tokenize(tok), tok).ids[-1]
    alone = support.tokenize(tok).ids[-1] + Prompt.parse("dax").tokenize(tok).ids[0]
    assert tok.convert_ids_to_tokens(list(merged[-2:])) == ["Ġa", "Ġdax"]
    assert merged != alone  # the precondition: the seam really merges


def test_shot_sampling_is_seeded_and_excludes_query():
    picks = [sample_shots(10, 4, query_rng(0, trial=0, query_key=3), exclude={3}) for _ in range(3)]
    assert picks[0] == picks[1] == picks[2] and 3 not in picks[0] and len(set(picks[0])) == 4
    other_trial = sample_shots(10, 4, query_rng(0, trial=1, query_key=3), exclude={3})
    assert other_trial != picks[0]
    assert sorted(sample_shots(5, 3, query_rng(0, 0, 2), exclude={2, 4})) == [0, 1, 3]
    with pytest.raises(ValueError, match="only 3 demonstrations"):
        sample_shots(5, 4, query_rng(0, 0, 2), exclude={2, 4})


def test_render_names_the_missing_field():
    assert render("Q: {question} A:", question="what?") == "Q: what? A:"
    with pytest.raises(ValueError, match=r"uses \{answer\} but only \['question'\] are available"):
        render("Q: {question} A: {answer}", question="what?")
