"""Caption packing is proven equal to padding: the loss, every example's token losses and the gradients
of encoder and mapper of a packed batch equal those of the padded batch of the same examples, on every
LM family packing accepts; a mask that lets segments see each other is caught; the rest is refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers.masking_utils as masking_utils

from frozen import FrozenModel
from frozen.config import LMConfig, ModelConfig
from frozen.core.tiny import save_tiny_lm, tiny_tokenizer
from frozen.data.collate import IGNORE_INDEX, Collator, lm_positions
from frozen.data.packing import PackedCollator, collator_for, first_fit_decreasing
from frozen.data.samples import Example
from frozen.errors import FrozenConfigError
from frozen.model.lm import PACKING_LM_TYPES, packing_problem

K = 2
CAPTIONS = [" a red circle", " a blue rectangle on the gray circle. this is a dax", " a teal triangle",
            " the quick brown fox jumps over the lazy dog", " a black circle. a brown rectangle", " yes",
            " a green triangle. a yellow circle. a gray rectangle", " what is this?"]
PROMPTS = {5: " Q: is it red? A:", 7: " Q: what shape is it? A:"}


def examples() -> list[Example]:
    g = torch.Generator().manual_seed(0)
    return [Example(key=f"e{i}", kind="vqa" if i in PROMPTS else "caption", prompt=PROMPTS.get(i, ""), target=c,
                    meta={}, image=torch.rand(3, 32, 32, generator=g)) for i, c in enumerate(CAPTIONS)]


@pytest.fixture(scope="module")
def lm_dirs(tiny_lm_dirs, tmp_path_factory):
    return {**tiny_lm_dirs, "qwen2": save_tiny_lm(tmp_path_factory.mktemp("qwen2"), "qwen2")}


def build(lm_dir, attn: str) -> FrozenModel:
    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(lm_dir), vision="tiny_cnn", image_size=32, num_prefix_tokens=K)
    model.lm.set_attn_implementation(attn)
    return model.train()


def token_losses(logits: torch.Tensor, labels: torch.Tensor, row: int, start: int, n: int) -> torch.Tensor:
    """CE of the ``n`` text tokens of the segment at ``logits[row, start:]`` (prefix at ``start``), each
    predicted from the position before it; ignored labels give 0."""
    pred = logits[row, start + K - 1: start + K - 1 + n].float()
    return F.cross_entropy(pred, labels, ignore_index=IGNORE_INDEX, reduction="none")


def segment_length(positions: torch.Tensor) -> int:
    """Length of the segment at the start of ``positions`` (0, 1, 2, ... until they restart)."""
    steps = positions == torch.arange(len(positions))
    return int(steps.long().cumprod(0).sum())


def run(model, batch, packed: bool):
    """(loss, per-example token losses, {parameter name: gradient}) of one forward + backward."""
    model.zero_grad(set_to_none=True)
    n_targets = int((batch["labels"] != IGNORE_INDEX).sum())
    if packed:
        out = model(batch["images"], batch["input_ids"], None, labels=batch["labels"], num_items_in_batch=n_targets,
                    position_ids=batch["position_ids"], prefix_index=batch["prefix_index"])
    else:
        out = model(batch["images"], batch["input_ids"], batch["attention_mask"], labels=batch["labels"],
                    num_items_in_batch=n_targets)
    out.loss.backward()
    per_example = []
    for i in range(len(batch["keys"])):
        if packed:
            row, start = divmod(int(batch["prefix_index"][i, 0]), batch["input_ids"].shape[1])
            n = segment_length(batch["position_ids"][row, start:]) - K  # text tokens
            labels = batch["labels"][row, start + K: start + K + n]
        else:
            row, start, n = i, 0, int(batch["attention_mask"][i].sum())
            labels = batch["labels"][i, :n]
        per_example.append(token_losses(out.logits.detach(), labels, row, start, n))
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return out.loss.detach(), per_example, grads


def batches(tok, max_length: int = 24):
    exs = examples()
    return Collator(tok, max_length)(exs), PackedCollator(tok, max_length, K)(exs)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", PACKING_LM_TYPES)
def test_packed_batch_equals_padded_batch(lm_dirs, kind, attn):
    model = build(lm_dirs[kind], attn)
    padded, packed = batches(model.tokenizer)
    assert packed["input_ids"].shape[0] < len(CAPTIONS), "the examples must share rows for the test to mean anything"
    loss_a, tokens_a, grads_a = run(model, padded, packed=False)
    loss_b, tokens_b, grads_b = run(model, packed, packed=True)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    for i, (a, b) in enumerate(zip(tokens_a, tokens_b)):
        assert a.shape == b.shape and a.numel() > 1
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=lambda m: f"example {i}: {m}")
    assert any(name.startswith("vision.") for name in grads_a) and any(n.startswith("mapper.") for n in grads_a)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert grads_a[name].abs().sum() > 0, f"{name}: no gradient reaches it"
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_mask_that_lets_segments_see_each_other_is_caught(lm_dirs, kind, monkeypatch):
    """transformers without its packed-sequence detection (one causal mask over the whole row): the
    comparison above fails on every example that is not first in its row."""
    model = build(lm_dirs[kind], "sdpa")
    padded, packed = batches(model.tokenizer)
    _, tokens_a, _ = run(model, padded, packed=False)
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    _, tokens_b, _ = run(model, packed, packed=True)
    width = packed["input_ids"].shape[1]
    not_first = [i for i in range(len(CAPTIONS)) if int(packed["prefix_index"][i, 0]) % width != 0]
    assert not_first
    for i in not_first:
        assert not torch.allclose(tokens_a[i], tokens_b[i], rtol=1e-3, atol=1e-4), f"example {i} did not see a leak"


def test_packed_collation_layout(tmp_path):
    tok = tiny_tokenizer()
    exs = examples()
    padded, packed = Collator(tok, 12)(exs), collator_for(tok, 12, True, K)(exs)  # some captions are cut
    assert "attention_mask" not in packed and torch.equal(packed["images"], padded["images"])  # example order
    assert packed["keys"] == padded["keys"] and packed["num_truncated"] == padded["num_truncated"] > 0
    assert packed["num_text_tokens"] == padded["num_text_tokens"] == int(padded["attention_mask"].sum())
    rows, width = packed["input_ids"].shape
    assert width <= 12 + K
    # Same targets, the same number of them; every segment starts with k ignored prefix slots at positions 0..k-1.
    assert sorted(packed["labels"][packed["labels"] != IGNORE_INDEX].tolist()) == sorted(
        padded["labels"][padded["labels"] != IGNORE_INDEX].tolist())
    flat_pos, flat_labels = packed["position_ids"].reshape(-1), packed["labels"].reshape(-1)
    for i in range(len(exs)):
        slots = packed["prefix_index"][i]
        assert flat_pos[slots].tolist() == list(range(K)) and flat_labels[slots].eq(IGNORE_INDEX).all()
        row, start = divmod(int(slots[0]), width)
        n = int(padded["attention_mask"][i].sum())
        assert packed["input_ids"][row, start + K: start + K + n].tolist() == padded["input_ids"][i, :n].tolist()
        assert packed["position_ids"][row, start: start + K + n].tolist() == list(range(K + n))
    starts = packed["position_ids"] == 0
    assert packed["labels"][starts].eq(IGNORE_INDEX).all()  # no segment start is ever a target
    real, computed = lm_positions(packed, K)
    assert real == lm_positions(padded, K)[0] == padded["num_text_tokens"] + K * len(exs)
    assert computed == rows * width < lm_positions(padded, K)[1]


def test_first_fit_decreasing_is_deterministic_and_fills_rows():
    assert first_fit_decreasing([3, 5, 2, 5, 1], 6) == [[1, 4], [3], [0, 2]]
    assert first_fit_decreasing([2, 2, 2], 6) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="exceeds the bin capacity 4"):
        first_fit_decreasing([5], 4)


def test_an_lm_that_cannot_keep_segments_apart_is_refused_before_its_weights_load(lm_dirs, monkeypatch):
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("the LM's weights were loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    with pytest.raises(FrozenConfigError) as err:
        FrozenModel(ModelConfig(vision="tiny_cnn", image_size=32), LMConfig(name=str(lm_dirs["opt"])), packing=True)
    assert str(err.value) == (
        "data.packing=true: the 'opt' LM cannot keep packed captions apart (its attention mask ignores position_ids); "
        "set data.packing=false for it (packing supports gpt2, llama, qwen2)")
    assert "\n" not in str(err.value)


def test_a_loaded_lm_that_would_mix_segments_is_refused_at_the_packed_forward(lm_dirs):
    model = FrozenModel.from_pretrained(str(lm_dirs["opt"]), vision="tiny_cnn", image_size=32, num_prefix_tokens=K)
    packed = PackedCollator(model.tokenizer, 24, K)(examples())
    with pytest.raises(FrozenConfigError, match="the 'opt' LM cannot keep packed captions apart"):
        model(packed["images"], packed["input_ids"], labels=packed["labels"], position_ids=packed["position_ids"],
              prefix_index=packed["prefix_index"])
    assert packing_problem("llama", "flash_attention_2") == (
        "data.packing=true: attention implementation 'flash_attention_2' would mix packed captions; "
        "load the LM with eager, sdpa, flex_attention or set data.packing=false")
    assert packing_problem("llama", None) is None and packing_problem("gpt2", "sdpa") is None
