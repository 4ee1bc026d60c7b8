"""Stop strings in every decoding path: with several stops, an answer ends at the earliest one that occurs.

The tiny LM is scripted (:func:`frozen.core.tiny.script_lm`): its next token is a function of the last input
token, so every path (transformers' cached ``generate``, the uncached reference, a left-padded batch, the
shared-support KV cache) writes the same text, ``"red. blue\\nQ"``, and must cut it at the ``"."`` although ``"\\n"`` is
listed first.
"""

from __future__ import annotations

import torch

TEXT = "red. blue\nQ"
STOPS = ["\n", "."]  # "\n" first: the earliest stop in the text, ".", must still win


def _images(n):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 32, 32, generator=g) for _ in range(n)]


def test_the_script_writes_the_whole_text_without_stops(scripted):
    imgs = _images(1)
    assert scripted.generate([imgs], ["<image>Q: what color? A:"], max_new_tokens=12) == [TEXT.strip()]
    assert scripted.generate([imgs], ["<image>Q: what color? A:"], max_new_tokens=12, use_cache=False) == [TEXT]


def test_earliest_stop_in_every_decoding_path(scripted):
    imgs = _images(3)
    prompts = ["<image>Q: what color? A:", "<image>This is a dax.\n<image>Q: and this one, what color is it? A:"]
    images = [imgs[:1], imgs[1:3]]
    assert scripted.generate(images[:1], prompts[:1], max_new_tokens=12, stop_strings=STOPS) == ["red"]  # cached
    assert scripted.generate(images[:1], prompts[:1], max_new_tokens=12, stop_strings=STOPS,
                             use_cache=False) == ["red"]  # uncached reference
    assert scripted.generate(images, prompts, max_new_tokens=12, stop_strings=STOPS, batch_size=2) == ["red", "red"]
    assert scripted.generate(images, prompts, max_new_tokens=12, stop_strings=STOPS[::-1], batch_size=2,
                             use_cache=False) == ["red", "red"]
    scripted.lm_calls = 0
    shared = scripted.generate_shared([imgs[1]], "<image>This is a dax.\n", [[imgs[2]], [imgs[0]]],
                                      ["<image>Q: what color? A:", "<image>Q: and this? A:"], max_new_tokens=12,
                                      stop_strings=STOPS, batch_size=2)
    assert shared == ["red", "red"]
    # the support, the queries (first token), then one step per token up to the "." (its last token): the
    # shared cache stops decoding at the first stop too
    script = scripted.tokenizer(TEXT, add_special_tokens=False).input_ids
    to_dot = next(n for n in range(1, len(script) + 1) if "." in scripted.tokenizer.decode(script[:n]))
    assert to_dot < len(script) and scripted.lm_calls == 2 + to_dot - 1
    # decoding stops at the first stop string: no token after "." is generated
    assert scripted.generate(images[:1], prompts[:1], max_new_tokens=2, stop_strings=STOPS) == ["red"]
    assert scripted.generate(images[:1], prompts[:1], max_new_tokens=12, stop_strings=["\n"]) == ["red. blue"]


def test_a_later_stop_string_that_occurs_first_wins(scripted):
    imgs = _images(1)
    for stops in (["Q", "blue", "."], [". ", "\n"], ["d."]):
        got = scripted.generate([imgs], ["<image>Q: what color? A:"], max_new_tokens=12, stop_strings=stops)
        assert got == [TEXT[:min(TEXT.find(s) for s in stops)].strip()], stops


def test_generate_shared_with_an_empty_query_answers_as_generate(tiny_model):
    """The query adds nothing: the support is the whole prompt, answered as generate answers it."""
    imgs = _images(2)
    support = "<image>This is a dax.\n<image>Q: What is this? A: This is a"
    want = tiny_model.generate([imgs], [support], max_new_tokens=6)
    assert tiny_model.generate_shared(imgs, support, [[]], [""], max_new_tokens=6) == want
    assert tiny_model.generate_shared(imgs, support, [[], []], ["", ""], max_new_tokens=6, batch_size=1) == want * 2
