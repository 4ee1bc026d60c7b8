"""Interleaved prompts and generation: layout, batching, caching, beams, stop strings, errors."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from frozen.model.generation import embed_prompts, left_pad, trim
from frozen.model.prompts import sample_shots, query_rng, split_prompt


def _images(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


PROMPTS = [
    "<image>a red",
    "<image>This is a dax.\n<image>This is a blicket.\n<image>Q: What is this? A: This is a",
    "Q: what color is the shape? A:",  # no image at all
    "<image><image>two images back to back",
]


def _prompt_images():
    imgs = _images(6)
    return [[imgs[0]], imgs[1:4], [], imgs[4:6]]


@pytest.mark.parametrize("kind", ["gpt2", "llama", "opt"])
def test_batched_equals_one_at_a_time_and_cached_equals_uncached(tiny_lm_dirs, kind):
    from frozen import FrozenModel

    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_lm_dirs[kind]), vision="tiny_cnn", image_size=32)
    images = _prompt_images()
    batched = model.generate(images, PROMPTS, max_new_tokens=8)
    single = [model.generate([imgs], [p], max_new_tokens=8)[0] for imgs, p in zip(images, PROMPTS)]
    uncached = model.generate(images, PROMPTS, max_new_tokens=8, use_cache=False)
    assert batched == single
    assert batched == uncached
    assert all(isinstance(t, str) for t in batched) and any(batched)


def test_interleaved_embedding_layout(tiny_model):
    """Each <image> becomes that image's [k, D] prefix, in order, between the text segments."""
    imgs = _images(2)
    (seq,) = embed_prompts(tiny_model, [imgs], ["<image> a dax.\n<image> Q: what"])
    tok = tiny_model.tokenizer
    emb = tiny_model.lm.get_input_embeddings()
    prefixes = tiny_model.encode_images(torch.stack(imgs))  # [2, k, D]
    t1 = emb(torch.tensor(tok(" a dax.\n", add_special_tokens=False).input_ids))
    t2 = emb(torch.tensor(tok(" Q: what", add_special_tokens=False).input_ids))
    expected = torch.cat([prefixes[0], t1, prefixes[1], t2])
    torch.testing.assert_close(seq, expected)


def test_left_padding():
    a, b = torch.ones(2, 4), torch.full((3, 4), 2.0)
    embeds, mask = left_pad([a, b])
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert embeds[0, 0].abs().sum() == 0 and torch.equal(embeds[0, 1:], a) and torch.equal(embeds[1], b)


def test_pil_images_are_preprocessed(tiny_model):
    pil = Image.new("RGB", (40, 20), (255, 0, 0))
    tensor = tiny_model.preprocess(pil)
    assert tensor.shape == (3, 32, 32)
    # zero-padded to square: top and bottom rows black, the middle red
    assert tensor[:, 0].abs().sum() == 0 and torch.allclose(tensor[0, 16], torch.ones(32))
    assert tiny_model.generate([[pil]], ["<image>a"], max_new_tokens=3) == tiny_model.generate(
        [[tensor]], ["<image>a"], max_new_tokens=3
    )


def test_beam_search_returns_best_beam(tiny_model):
    out = tiny_model.generate([[_images(1)[0]]] * 2, ["<image>a red", "<image>a blue"], max_new_tokens=6, num_beams=3)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    # one beam is greedy
    assert tiny_model.generate(None, ["a red"], max_new_tokens=6, num_beams=1) == tiny_model.generate(
        None, ["a red"], max_new_tokens=6
    )


def test_stop_strings_and_trim():
    assert trim(" blue\nQ: next", ["\n"]) == "blue"
    assert trim("red. yes\n", ["\n", "."]) == "red"
    assert trim("  plain ", []) == "plain"


def test_image_count_mismatch(tiny_model):
    with pytest.raises(ValueError, match=r"prompt has 2 <image> marker\(s\) but 1 image\(s\) were given"):
        tiny_model.generate([_images(1)], ["<image>a <image>b"])


def test_wrong_image_shape_in_generate(tiny_model):
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        tiny_model.generate([[torch.rand(3, 64, 64)]], ["<image>a"])


def test_split_prompt_counts_markers():
    assert split_prompt("<image>x<image>", 2) == ["", "x", ""]


def test_shot_sampling_is_seeded_and_excludes_query():
    picks = [sample_shots(10, 4, query_rng(0, trial=0, query_key=3), exclude={3}) for _ in range(3)]
    assert picks[0] == picks[1] == picks[2] and 3 not in picks[0] and len(set(picks[0])) == 4
    other_trial = sample_shots(10, 4, query_rng(0, trial=1, query_key=3), exclude={3})
    assert other_trial != picks[0]
    assert sorted(sample_shots(5, 3, query_rng(0, 0, 2), exclude={2, 4})) == [0, 1, 3]
    with pytest.raises(ValueError, match="only 3 demonstrations"):
        sample_shots(5, 4, query_rng(0, 0, 2), exclude={2, 4})


def test_smollm2_gguf_loads_offline_and_knows_english(smollm2_dir):
    """The packaged SmolLM2 (GGUF -> cached safetensors) scores English far better than shuffled words."""
    import time

    from frozen.model.lm import load_lm

    start = time.perf_counter()
    lm, tok = load_lm("smollm2-135m-instruct-gguf")
    assert time.perf_counter() - start < 15, "the cached safetensors copy should load in seconds"
    assert all(not p.requires_grad for p in lm.parameters())

    def ppl(text):
        ids = torch.tensor([tok(text).input_ids])
        with torch.no_grad():
            return math.exp(lm(ids, labels=ids).loss.item())

    english = "The cat sat on the mat and looked out of the window at the birds in the garden."
    shuffled = "window mat birds the garden sat the of at out looked cat and on the in The the."
    assert ppl(english) < 30
    assert ppl(shuffled) > 4 * ppl(english)


def test_min_new_tokens_keeps_eos_from_ending_an_answer_early(tiny_model):
    """An LM that wants EOS at once (SmolLM2-Instruct after "A:") answers with exactly the minimum."""
    eos = tiny_model.tokenizer.eos_token_id

    def favour_eos(module, args, logits):  # [B, L, V]: EOS wins every step unless it is banned
        logits = logits.clone()
        logits[..., eos] += 1e4
        return logits

    tiny_model.lm.get_output_embeddings().register_forward_hook(favour_eos)
    images = _images(3)
    prompts = ["<image>Q: what shape? A:", "<image>This is a dax.\n<image>Q: What is this? A: This is a"]
    imgs = [[images[0]], images[1:3]]
    assert tiny_model.generate(imgs, prompts, max_new_tokens=5) == ["", ""]
    forced = tiny_model.generate(imgs, prompts, max_new_tokens=5, min_new_tokens=2)
    assert all(forced)
    # Two tokens, then EOS: the same text as stopping after two tokens.
    assert tiny_model.generate(imgs, prompts, max_new_tokens=2, min_new_tokens=2) == forced
    assert tiny_model.generate(imgs, prompts, max_new_tokens=5, min_new_tokens=2, use_cache=False) == forced
    shared = tiny_model.generate_shared([images[1]], "<image>This is a dax.\n", [[images[2]]] * 2,
                                        ["<image>Q: What is this? A: This is a"] * 2, max_new_tokens=5, min_new_tokens=2)
    assert shared == [forced[1]] * 2
