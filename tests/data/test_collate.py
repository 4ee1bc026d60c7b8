"""The collator: caption + EOS targets, right padding with a real pad id, truncation that keeps EOS."""

from __future__ import annotations

import pytest
import torch

from frozen.core.tiny import tiny_tokenizer
from frozen.data.collate import IGNORE_INDEX, Collator, lm_positions
from frozen.data.samples import Example


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def example(prompt: str, target: str, key: str = "k") -> Example:
    return Example(key=key, kind="vqa" if prompt else "caption", prompt=prompt, target=target, meta={},
                   image=torch.zeros(3, 8, 8))


def test_collator_labels_eos_and_right_padding(tok):
    assert tok.pad_token_id is None and tok.eos_token_id == 0  # GPT-2 style: pads with EOS
    collate = Collator(tok, max_length=64)
    batch = collate([example("", " a red circle"), example(" Q: what color is the shape? A:", " red")])
    cap_ids = tok(" a red circle", add_special_tokens=False)["input_ids"]
    q_ids = tok(" Q: what color is the shape? A:", add_special_tokens=False)["input_ids"]
    a_ids = tok(" red", add_special_tokens=False)["input_ids"]
    width = max(len(cap_ids), len(q_ids) + len(a_ids)) + 1
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, width)
    assert batch["input_ids"].dtype == batch["labels"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["images"].shape == (2, 3, 8, 8)
    # Caption: every token and the EOS are targets; the tail is padding (pad id == eos id, yet -100).
    n = len(cap_ids) + 1
    assert batch["input_ids"][0, :n].tolist() == cap_ids + [0]
    assert batch["labels"][0, :n].tolist() == cap_ids + [0]
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (width - n)
    assert batch["input_ids"][0, n:].eq(0).all() and batch["labels"][0, n:].eq(IGNORE_INDEX).all()
    # VQA: prompt tokens are -100, the answer and EOS are targets.
    m = len(q_ids) + len(a_ids) + 1
    assert batch["input_ids"][1, :m].tolist() == q_ids + a_ids + [0]
    assert batch["labels"][1, :m].tolist() == [IGNORE_INDEX] * len(q_ids) + a_ids + [0]
    assert batch["attention_mask"][1].tolist() == [1] * m + [0] * (width - m)
    assert batch["texts"] == [" a red circle", " Q: what color is the shape? A: red"]
    assert batch["num_truncated"] == 0
    # Counts for the throughput log: n + m real text tokens; k = 2 prefix positions per image.
    assert batch["num_text_tokens"] == n + m == int(batch["attention_mask"].sum())
    assert lm_positions(batch, 2) == (n + m + 4, 2 * (2 + width))


def test_collator_truncation_keeps_eos(tok):
    collate = Collator(tok, max_length=5)
    batch = collate([example(" Q: what color is the shape? A:", " red"), example("", " a")])
    assert batch["input_ids"].shape == (2, 5)
    assert batch["input_ids"][0, -1] == 0 and batch["labels"][0, -1] == 0  # EOS kept as a target
    assert batch["labels"][0, :4].eq(IGNORE_INDEX).all()  # only prompt tokens survived the cut
    assert batch["num_truncated"] == 1


def test_collator_uses_a_real_pad_token(tok):
    tok2 = tiny_tokenizer()
    tok2.pad_token = "a"  # any non-EOS token
    batch = Collator(tok2, max_length=64)([example("", " a red circle"), example("", " a")])
    pad = tok2.pad_token_id
    assert pad != 0
    n = int(batch["attention_mask"][1].sum())
    assert batch["input_ids"][1, n:].eq(pad).all() and batch["labels"][1, n:].eq(IGNORE_INDEX).all()
    assert batch["labels"][1, n - 1] == 0


# ------------------------------------------------------------------------------ sample parsing
