"""The interleaved layout (data.interleave, data.lead_text, data.text_before_image) pinned token by token:
where each image's prefix slots are, that positions never restart inside a row, which tokens are targets,
and that the model reads it as one causal context (the first pair's loss is its own single-pair loss, a
later pair's is not)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from frozen import FrozenModel
from frozen.config import DataConfig
from frozen.core.tiny import tiny_tokenizer
from frozen.data.collate import IGNORE_INDEX, Collator
from frozen.data.interleave import InterleavedCollator, train_collator
from frozen.data.samples import Example
from frozen.errors import FrozenConfigError

K = 2
TEXTS = [("", " a red circle"), (" Q: is it red? A:", " yes"), ("", " a teal triangle on a gray rectangle"),
         (" Q: what shape is it? A:", " circle"), ("", " a blue rectangle"), ("", " a green triangle")]


def examples() -> list[Example]:
    g = torch.Generator().manual_seed(0)
    return [Example(key=f"e{i}", kind="vqa" if p else "caption", prompt=p, target=t, meta={},
                    image=torch.rand(3, 32, 32, generator=g)) for i, (p, t) in enumerate(TEXTS)]


def own_tokens(tok, ex: Example, max_length: int = 24) -> tuple[list[int], list[int]]:
    """The pair's text ids and labels as the single-pair collator makes them (prompt + target + EOS)."""
    ids, labels, _ = Collator(tok, max_length).encode_examples([ex])[0]
    return ids, labels


def test_interleaved_rows_hold_every_pair_with_its_slots_in_one_context():
    tok = tiny_tokenizer()
    exs = examples()
    batch = InterleavedCollator(tok, 24, K)(exs)
    rows, width = batch["input_ids"].shape
    assert rows < len(exs) and width <= 24 + K, "pairs must share rows"
    assert "attention_mask" not in batch
    # One context per row: positions 0 .. W-1, never restarting (packing restarts them per caption).
    assert torch.equal(batch["position_ids"], torch.arange(width).expand(rows, width))
    covered = torch.zeros(rows, width, dtype=torch.bool)
    for i, ex in enumerate(exs):
        slots = batch["prefix_index"][i]
        row, start = divmod(int(slots[0]), width)
        assert slots.tolist() == [row * width + start + j for j in range(K)], f"pair {i}: slots not contiguous"
        ids, labels = own_tokens(tok, ex)
        n = len(ids)
        assert batch["input_ids"][row, start + K: start + K + n].tolist() == ids, f"pair {i}: text not after its slots"
        assert batch["labels"][row, start + K: start + K + n].tolist() == labels, f"pair {i}: targets"
        assert batch["labels"][row, start: start + K].eq(IGNORE_INDEX).all(), "prefix slots are never targets"
        assert ex.target and all(t != IGNORE_INDEX for t in labels[-len(tok(ex.target)["input_ids"]) - 1:])
        covered[row, start: start + K + n] = True
    # The pairs tile each row from position 0 with no gap; what is left is padding, never a target.
    for r in range(rows):
        used = int(covered[r].sum())
        assert covered[r, :used].all() and not covered[r, used:].any()
        assert batch["labels"][r, used:].eq(IGNORE_INDEX).all()
    # Within a row the pairs keep the batch order (a shuffled stream: mixed kinds), first-fit over rows.
    for r in range(rows):
        starts = sorted((int(batch["prefix_index"][i, 0]), i) for i in range(len(exs))
                        if batch["prefix_index"][i, 0] // width == r)
        assert [i for _, i in starts] == sorted(i for _, i in starts)
    assert batch["num_text_tokens"] == sum(len(own_tokens(tok, e)[0]) for e in exs)
    assert InterleavedCollator(tok, 24, K)(exs)["input_ids"].equal(batch["input_ids"]), "deterministic"


def test_a_hand_written_row():
    """Two pairs: [s s][a red circle][EOS][s s][Q: is it red? A:][yes][EOS], labels on captions and EOS only."""
    tok = tiny_tokenizer()
    exs = examples()[:2]
    batch = InterleavedCollator(tok, 24, K, separator="\n")(exs)
    pad, eos = tok.eos_token_id, tok.eos_token_id
    cap, q, a, nl = (tok(t)["input_ids"] for t in (" a red circle", " Q: is it red? A:", " yes", "\n"))
    # first-fit decreasing puts the longer pair first in the bin, the row keeps batch order: pair 0 then pair 1
    expect_ids = [pad, pad] + cap + nl + [pad, pad] + q + a + [eos]
    expect_labels = [-100, -100] + cap + nl + [-100, -100] + [-100] * len(q) + a + [eos]
    assert batch["input_ids"].tolist() == [expect_ids]
    assert batch["labels"].tolist() == [expect_labels]
    second = K + len(cap) + len(nl)
    assert batch["prefix_index"].tolist() == [[0, 1], [second, second + 1]]
    assert batch["position_ids"].tolist() == [list(range(len(expect_ids)))]


def test_text_before_the_image_is_context_and_the_slots_follow_it():
    tok = tiny_tokenizer()
    exs = examples()
    lead = InterleavedCollator(tok, 24, K, interleave=False, lead_text=" Picture:")(exs)
    lead_ids = tok(" Picture:")["input_ids"]
    assert lead["input_ids"].shape[0] == len(exs), "without interleave every pair is a row of its own"
    for i, ex in enumerate(exs):
        row, start = divmod(int(lead["prefix_index"][i, 0]), lead["input_ids"].shape[1])
        assert row == i and start == len(lead_ids)
        assert lead["input_ids"][i, :start].tolist() == lead_ids and lead["labels"][i, : start + K].eq(-100).all()
        ids, labels = own_tokens(tok, ex)
        assert lead["labels"][i, start + K: start + K + len(ids)].tolist() == labels
    mixed = InterleavedCollator(tok, 40, K, interleave=False, text_before_image=1.0)(exs)
    again = InterleavedCollator(tok, 40, K, interleave=False, text_before_image=1.0)(exs)
    assert torch.equal(mixed["input_ids"], again["input_ids"]), "seeded by the batch: exact on resume"
    lines = {ex.key: (ex.prompt + ex.target).strip() + "\n" for ex in exs if ex.kind == "vqa"}
    for i, ex in enumerate(exs):
        start = int(mixed["prefix_index"][i, 0]) % mixed["input_ids"].shape[1]
        before = tok.decode(mixed["input_ids"][i, :start].tolist())
        assert before in lines.values() and before != lines.get(ex.key), f"pair {i}: {before!r}"
        assert mixed["labels"][i, : start + K].eq(-100).all(), "the line before the image is not a target"
    half = InterleavedCollator(tok, 40, K, interleave=False, text_before_image=0.5)(exs * 4)
    with_line = sum(int(half["prefix_index"][i, 0]) % half["input_ids"].shape[1] > 0 for i in range(24))
    assert 4 <= with_line <= 20


def test_the_options_are_checked_before_any_batch():
    tok = tiny_tokenizer()
    with pytest.raises(FrozenConfigError, match="lead_text is .* tokens, too long for data.max_length=4"):
        InterleavedCollator(tok, 4, K, lead_text=" Answer the question about the picture.")
    assert DataConfig.check(DataConfig(train_shards="x", packing=True, interleave=True)) == [
        "packing and interleave are exclusive (packing keeps captions apart, interleave joins them): "
        "set data.packing=false with data.interleave=true"]
    assert DataConfig.check(DataConfig(train_shards="x", text_before_image=1.5)) == [
        "text_before_image must be a probability in [0, 1], got 1.5"]
    assert DataConfig.check(DataConfig(train_shards="x", interleave_separator="\n")) == [
        "interleave_separator needs data.interleave=true (it separates the pairs of a row)"]
    assert type(train_collator(DataConfig(train_shards="x"), tok, K)) is Collator
    assert isinstance(train_collator(DataConfig(train_shards="x", interleave=True), tok, K), InterleavedCollator)


def _pair_token_losses(logits, labels, row, start, n):
    """CE of the ``n`` text tokens after the slots at ``start`` (each predicted from the position before it)."""
    pred = logits[row, start + K - 1: start + K - 1 + n].float()
    return F.cross_entropy(pred, labels, ignore_index=IGNORE_INDEX, reduction="none")


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_the_first_pair_is_its_own_single_pair_forward_and_later_pairs_see_it(tiny_lm_dirs, kind):
    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_lm_dirs[kind]), vision="tiny_cnn", image_size=32,
                                        num_prefix_tokens=K).eval()
    tok, exs = model.tokenizer, examples()
    batch = InterleavedCollator(tok, 24, K)(exs)
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        out = model(batch["images"], batch["input_ids"], None, labels=batch["labels"],
                    position_ids=batch["position_ids"], prefix_index=batch["prefix_index"])
    firsts = [i for i in range(len(exs)) if int(batch["prefix_index"][i, 0]) % width == 0]
    later = [i for i in range(len(exs)) if i not in firsts]
    assert firsts and later
    for i in range(len(exs)):
        single = Collator(tok, 24)([exs[i]])
        with torch.no_grad():
            alone = model(single["images"], single["input_ids"], single["attention_mask"], labels=single["labels"])
        n = single["input_ids"].shape[1]
        own = _pair_token_losses(alone.logits, single["labels"][0], 0, 0, n)
        row, start = divmod(int(batch["prefix_index"][i, 0]), width)
        mine = _pair_token_losses(out.logits, batch["labels"][row, start + K: start + K + n], row, start, n)
        if i in firsts:  # the first pair of a row sees nothing before it: exactly its single-pair forward
            torch.testing.assert_close(mine, own, rtol=1e-5, atol=1e-5, msg=lambda m: f"pair {i}: {m}")
        else:  # a later pair reads the pairs before it (one context): not its single-pair loss
            assert not torch.allclose(mine, own, rtol=1e-3, atol=1e-4), f"pair {i} did not see the earlier pairs"
