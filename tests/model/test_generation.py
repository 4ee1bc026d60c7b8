"""Generation from interleaved prompts: layout, batching, caching, beams against brute force, options, errors."""

from __future__ import annotations

import itertools
import math
from functools import partial

import pytest
import torch
from PIL import Image

from frozen.model.decoding import trim
from frozen.model.embedding import embed_prompts, left_pad
from frozen.model.generation import GenerationOptions
from frozen.model.prompts import Prompt


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


def _brute_force_scores(model, prompt: str, images, allowed: list[int], length: int) -> dict[tuple[int, ...], float]:
    """Summed log-probability of every sequence of ``length`` tokens from ``allowed`` after ``prompt``."""
    (prompt_embeds,) = embed_prompts(model, [images], [prompt])  # [P, D]
    seqs = list(itertools.product(allowed, repeat=length))
    ids = torch.tensor(seqs)  # [N, L]
    embeds = torch.cat([prompt_embeds.expand(len(seqs), -1, -1), model.embed_tokens(ids)], dim=1)  # [N, P + L, D]
    with torch.no_grad():
        logits = model.lm(inputs_embeds=embeds).logits[:, -length - 1 : -1]  # [N, L, V]: predicts each new token
    logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[..., None])[..., 0]  # [N, L]
    return {seq: float(score) for seq, score in zip(seqs, logprobs.sum(-1))}


def test_beam_search_finds_the_best_sequence_by_brute_force(tiny_model):
    """Beam search as wide as the search space must return the highest-scoring sequence.

    The LM is limited to a 3-token vocabulary (every other logit -1e9) and EOS is out of it, so every
    answer has exactly L = 3 tokens and its beam score is its summed log-probability / 3. With
    num_beams = 3**3 no sequence is ever pruned, so the top beam is the argmax over all 27. The
    test looks for a case where greedy decoding is *not* optimal, so a beam search quietly run as
    greedy (num_beams forced to 1) fails it.
    """
    tok, length = tiny_model.tokenizer, 3
    words = [" red", " blue", " green", " dax", " blicket", " circle"]
    word_ids = [tok(w, add_special_tokens=False).input_ids for w in words]
    assert all(len(ids) == 1 for ids in word_ids)  # one token each: decoded answers are distinct
    image = _images(1)[0]
    prompts = ["<image>Q: what color is the shape? A:", "<image>a red"]
    greedy_was_wrong = 0
    for allowed in itertools.combinations([ids[0] for ids in word_ids], 3):
        bias = torch.full((len(tok),), -1e9)
        bias[list(allowed)] = 0.0
        restrict = partial(lambda m, a, logits, bias: logits + bias, bias=bias)  # [B, L, V] + [V]
        hook = tiny_model.lm.get_output_embeddings().register_forward_hook(restrict)
        try:
            beams = tiny_model.generate([[image]] * 2, prompts, max_new_tokens=length, num_beams=3**length)
            greedy = tiny_model.generate([[image]] * 2, prompts, max_new_tokens=length)
            for prompt, beam, greedy_answer in zip(prompts, beams, greedy):
                scores = _brute_force_scores(tiny_model, prompt, [image], list(allowed), length)
                ranked = sorted(scores, key=scores.get, reverse=True)
                if scores[ranked[0]] - scores[ranked[1]] < 1e-3:  # a near tie: float noise could pick either
                    continue
                assert beam == tok.decode(list(ranked[0])).strip(), (allowed, prompt)
                greedy_was_wrong += greedy_answer != beam
        finally:
            hook.remove()
        if greedy_was_wrong:
            break
    assert greedy_was_wrong, "no case where greedy decoding misses the best sequence: the test proves nothing"


def test_generation_options_declared_once():
    opts = GenerationOptions.of(max_new_tokens=3, stop_strings="\n", repetition_penalty=1.2)
    assert (opts.max_new_tokens, opts.stop_strings, opts.extra) == (3, ("\n",), {"repetition_penalty": 1.2})
    assert GenerationOptions.of(opts, num_beams=2).extra == {"repetition_penalty": 1.2}  # kept from the base
    assert GenerationOptions.of(opts, num_beams=2).max_new_tokens == 3
    with pytest.raises(ValueError, match=r"^max_new_tokens must be >= 1, got 0; num_beams must be >= 1, got 0$"):
        GenerationOptions(max_new_tokens=0, num_beams=0)
    with pytest.raises(ValueError, match=r"^batch_size must be >= 1, got 0$"):
        GenerationOptions(batch_size=0)
    both = GenerationOptions.of(extra={"top_k": 3}, repetition_penalty=1.2)
    assert both.extra == {"top_k": 3, "repetition_penalty": 1.2}
    with pytest.raises(TypeError, match="options must be a GenerationOptions, got int; pass decoding settings"):
        GenerationOptions.of(20)
    with pytest.raises(ValueError, match="use_cache=False is the greedy reference path"):
        GenerationOptions(use_cache=False, num_beams=2)


def test_options_object_and_prompt_objects_equal_keywords_and_strings(tiny_model):
    images = _prompt_images()
    expected = tiny_model.generate(images, PROMPTS, max_new_tokens=4, stop_strings=["."])
    opts = GenerationOptions(max_new_tokens=4, stop_strings=(".",))
    assert tiny_model.generate(images, PROMPTS, opts) == expected
    prompts = [Prompt.parse(p, imgs) for p, imgs in zip(PROMPTS, images)]
    assert tiny_model.generate(None, prompts, max_new_tokens=4, stop_strings=".") == expected
    assert tiny_model.generate(None, prompts[1], opts) == expected[1:2]
    with pytest.raises(ValueError, match="a Prompt carries its own images"):
        tiny_model.generate(images, prompts, opts)


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
                                        ["<image>Q: What is this? A: This is a"] * 2, max_new_tokens=5,
                                        min_new_tokens=2)
    assert shared == [forced[1]] * 2
