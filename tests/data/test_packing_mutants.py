"""Packing details that the layout test leaves open (found by make mutate): first-fit's bookkeeping, rows of
three segments, the integer dtypes, k = 1, and the padded collator chosen when packing is off."""

from __future__ import annotations

import pytest
import torch

from frozen.core.tiny import tiny_tokenizer
from frozen.data.collate import IGNORE_INDEX, Collator
from frozen.data.packing import PackedCollator, collator_for, first_fit_decreasing
from frozen.data.samples import Example
from frozen.errors import FrozenConfigError


def test_first_fit_tracks_the_room_left_in_each_bin():
    # 4 then 3 fill the first bin to 7: the second 3 needs a new bin
    assert first_fit_decreasing([4, 3, 3], 7) == [[0, 1], [2]]
    assert first_fit_decreasing([2, 2, 2, 2], 4) == [[0, 1], [2, 3]]


def _examples(captions):
    return [Example(key=f"k{i}", kind="caption", prompt="", target=c, meta={"captions": [c]},
                    image=torch.zeros(3, 8, 8)) for i, c in enumerate(captions)]


def test_three_segments_in_one_row():
    tok = tiny_tokenizer()
    captions = ["a red circle", "a dax", "blue"]
    k = 1
    padded = Collator(tok, 16)(_examples(captions))
    packed = PackedCollator(tok, 16, k)(_examples(captions))
    lengths = [k + int(n) for n in padded["attention_mask"].sum(-1)]
    assert sum(lengths) <= 16 + k and packed["input_ids"].shape == (1, sum(lengths))  # one row holds all three
    for name in ("input_ids", "labels", "position_ids", "prefix_index"):
        assert packed[name].dtype == torch.long, name
    # segments longest first; positions restart at 0 in each, and each prefix slot sits at its segment's start
    order = sorted(range(3), key=lambda i: (-lengths[i], i))
    expected_pos, start = [], 0
    for i in order:
        expected_pos += list(range(lengths[i]))
        assert packed["prefix_index"][i].tolist() == [start]
        n = lengths[i] - k
        assert packed["input_ids"][0, start + k:start + k + n].tolist() == padded["input_ids"][i, :n].tolist()
        start += lengths[i]
    assert packed["position_ids"][0].tolist() == expected_pos
    assert packed["labels"][0, packed["prefix_index"].reshape(-1)].eq(IGNORE_INDEX).all()


def test_one_prefix_token_is_enough_and_none_is_refused():
    tok = tiny_tokenizer()
    assert PackedCollator(tok, 12, 1).row_length == 13
    with pytest.raises(FrozenConfigError, match=r"^packing needs num_prefix_tokens >= 1 \(the prefix slots\), got 0$"):
        PackedCollator(tok, 12, 0)
    with pytest.raises(FrozenConfigError, match="^data.packing=true needs the model's num_prefix_tokens to lay out "
                                                "the prefix slots$"):
        collator_for(tok, 12, True, None)


def test_packing_off_gives_the_padded_collator():
    tok = tiny_tokenizer()
    collator = collator_for(tok, 12, False, 2)
    assert type(collator) is Collator and collator.tokenizer is tok and collator.max_length == 12
    packed = collator_for(tok, 12, True, 2)
    assert isinstance(packed, PackedCollator) and packed.max_length == 12 and packed.num_prefix_tokens == 2
