"""Property tests of the text boundary: ``<image>`` parsing, joining prompts, tokenising at the seams, templates.

Every input gives a correct result or one :class:`~frozen.errors.InputError` line, never another exception.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frozen.errors import InputError
from frozen.model.prompts import IMAGE_MARKER, Prompt, render

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None)  # reproducible; no example database
# Pieces that stress the marker and the tokenizer: partial and look-alike markers, the EOS string,
# control and zero-width characters, combining marks, astral code points, a lone surrogate.
PIECES = [IMAGE_MARKER, "<image", "image>", "<", ">", "<IMAGE>", "< image>", "<|endoftext|>", "\x00", "\n", "\r\t",
          "\u200b", "e\u0301", "\U0001f642", "\ud800", " ", "{", "}", "{question}"]
texts = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(PIECES)), max_size=8).map("".join)


@pytest.fixture(scope="module")
def tok():
    from frozen.core.tiny import tiny_tokenizer

    return tiny_tokenizer()


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@FUZZ
@given(text=texts, num_images=st.integers(0, 4))
def test_parse_is_exact_or_one_line(text, num_images):
    images = [object() for _ in range(num_images)]
    try:
        p = Prompt.parse(text, images)
    except InputError as err:
        assert "\n" not in str(err)
        assert text.count(IMAGE_MARKER) != num_images or not _valid(text)
        return
    assert p.text == text and list(p.images) == images and len(p.texts) == num_images + 1
    assert not any(IMAGE_MARKER in t for t in p.texts)


@FUZZ
@given(a=texts, b=texts)
def test_concat_keeps_the_text_or_refuses_a_marker_spelt_across_the_seam(a, b):
    if not (_valid(a) and _valid(b)):
        return
    pa, pb = Prompt.parse(a, [0] * a.count(IMAGE_MARKER)), Prompt.parse(b, [1] * b.count(IMAGE_MARKER))
    try:
        joined = pa + pb
    except InputError as err:
        assert "\n" not in str(err) and (a + b).count(IMAGE_MARKER) > a.count(IMAGE_MARKER) + b.count(IMAGE_MARKER)
        return
    assert joined.text == a + b and joined.num_images == pa.num_images + pb.num_images


@FUZZ
@given(a=texts, b=texts)
def test_join_equals_tokenizing_the_joined_prompt(tok, a, b):
    if not (_valid(a) and _valid(b)):
        return
    pa, pb = Prompt.parse(a, [0] * a.count(IMAGE_MARKER)), Prompt.parse(b, [1] * b.count(IMAGE_MARKER))
    try:
        whole = (pa + pb).tokenize(tok)
    except InputError:
        return  # a marker spelt across the seam: refused above
    joined = pa.tokenize(tok).join(pb.tokenize(tok), tok)
    assert joined.ids == whole.ids and joined.layout() == whole.layout()
    assert joined.prompt.text == a + b


@FUZZ
@given(text=texts.filter(lambda t: IMAGE_MARKER not in t))
def test_a_prompt_without_images_tokenises_as_its_text(tok, text):
    try:
        p = Prompt.parse(text)
    except InputError:
        assert not _valid(text)
        return
    expected = tok(text, add_special_tokens=False).input_ids if text else []
    assert p.tokenize(tok).layout() == list(expected)


@FUZZ
@given(template=texts, question=texts)
def test_render_formats_or_names_the_template(template, question):
    try:
        out = render(template, question=question)
    except InputError as err:
        assert "\n" not in str(err).replace(repr(template), "")
        return
    assert out == template.format(question=question)


def test_examples_found_by_fuzzing():
    with pytest.raises(InputError, match=r"cannot contain <image>; .*\(segment 0: 'a<image>b'\)"):
        Prompt.parse("a<ima") + Prompt.parse("ge>b")
    with pytest.raises(InputError, match="segment 0 is not valid Unicode"):
        Prompt.parse("a\ud800")
    for template in ("{", "{0}", "{question!z}", "{question:zz}"):
        with pytest.raises(InputError, match="is not a format string with only named fields"):
            render(template, question="q")
    with pytest.raises(InputError, match="uses {answer}"):
        render("{answer}", question="q")
