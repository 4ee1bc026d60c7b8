"""Property tests of the collator on odd text: empty, huge, unicode, control characters, special-token strings.

Every batch is exact (layout, labels, masks, truncation count) or one :class:`~frozen.errors.FrozenError` line.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from frozen.data.collate import IGNORE_INDEX, Collator
from frozen.data.samples import Example
from frozen.errors import FrozenConfigError, InputError

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None)  # reproducible; no example database
PIECES = ["<image>", "<|endoftext|>", "\x00", "\n", "\r\t", "\u200b", "e\u0301", "\U0001f642", " ", "Q: A:",
          "a" * 300, "\ud800"]
texts = st.lists(st.one_of(st.text(max_size=10), st.sampled_from(PIECES)), max_size=6).map("".join)
IMAGE = torch.zeros(3, 4, 4)


@pytest.fixture(scope="module")
def tok():
    from frozen.core.tiny import tiny_tokenizer

    return tiny_tokenizer()


def _example(i: int, prompt: str, target: str) -> Example:
    return Example(key=f"k{i}", kind="vqa" if prompt else "caption", prompt=prompt, target=target, meta={},
                   image=IMAGE)


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False).input_ids) if text else []


@FUZZ
@given(pairs=st.lists(st.tuples(texts, texts), min_size=1, max_size=4), max_length=st.integers(1, 40))
def test_batches_are_exact_or_one_line(tok, pairs, max_length):
    examples = [_example(i, p, t) for i, (p, t) in enumerate(pairs)]
    collate = Collator(tok, max_length)
    try:
        batch = collate(examples)
    except InputError as err:
        assert "\n" not in str(err) and not all(_valid(p + t) for p, t in pairs)
        return
    eos, rows = tok.eos_token_id, []
    for p, t in pairs:
        prompt, target = _ids(tok, p), _ids(tok, t)
        ids, labels = prompt + target + [eos], [IGNORE_INDEX] * len(prompt) + target + [eos]
        if len(ids) > max_length:  # cut from the end, the EOS stays
            ids, labels = ids[: max_length - 1] + [eos], labels[: max_length - 1] + [eos]
        rows.append((ids, labels, len(prompt) + len(target) + 1 > max_length))
    width = max(len(ids) for ids, _, _ in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (len(pairs), width)
    assert width <= max_length and batch["num_truncated"] == sum(cut for _, _, cut in rows)
    for i, (ids, labels, _) in enumerate(rows):
        n = len(ids)
        assert batch["input_ids"][i, :n].tolist() == ids and batch["labels"][i, :n].tolist() == labels
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
        assert batch["labels"][i, n:].eq(IGNORE_INDEX).all() and batch["input_ids"][i, n:].eq(collate.pad_id).all()
    assert batch["texts"] == [p + t for p, t in pairs] and batch["images"].shape == (len(pairs), 3, 4, 4)


def test_examples_found_by_fuzzing(tok):
    with pytest.raises(InputError, match=r"example k1: its target is not valid Unicode \(a lone surrogate"):
        Collator(tok, 8)([_example(0, "", "ok"), _example(1, "", "a\ud800")])
    for bad in (0, -3):
        with pytest.raises(FrozenConfigError, match=f"max_length must be >= 1 .*, got {bad}"):
            Collator(tok, bad)
