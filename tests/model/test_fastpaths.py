"""Fast paths: shared-support KV reuse equals full-prompt generation; the bench's entries run and agree."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from frozen import scaling
from frozen.model.decoding import greedy_cached, greedy_uncached, stop_string_criteria, trim
from frozen.model.generation import generate_shared
from frozen.model.prompts import Prompt

SUPPORT = "Answer with dax or blicket.\n<image>This is a dax.\n<image>This is a blicket.\n"
# Varied lengths; a query without an image and one starting with text (the tokenizer may merge it
# with the support's last text), one with two images.
QUERIES = [
    "<image>Q: What is this? A: This is a",
    "<image>a",
    "Q: what color is the shape? A:",
    "<image><image>two images back to back, then a longer question: what is it?",
    "and then <image> Q: which?",
]


def _images(n: int, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def _episode():
    imgs = _images(8)
    return imgs[:2], [[imgs[2]], [imgs[3]], [], [imgs[4], imgs[5]], [imgs[6]]]


def _model(path: Path):
    from frozen import FrozenModel

    torch.manual_seed(0)
    return FrozenModel.from_pretrained(str(path), vision="tiny_cnn", image_size=32)


def _reference(model, support, queries, prompts, **kw) -> list[str]:
    """Plain generation, one full prompt (support + query) at a time."""
    return [model.generate([support + q], [SUPPORT + p], **kw)[0] for q, p in zip(queries, prompts)]


@pytest.mark.parametrize("kind", ["gpt2", "llama", "opt"])
def test_shared_support_equals_full_prompts(tiny_lm_dirs, kind):
    model = _model(tiny_lm_dirs[kind])
    support, queries = _episode()
    expected = _reference(model, support, queries, QUERIES, max_new_tokens=8)
    # batch_size below the number of queries: several batches start from copies of one cache
    assert generate_shared(model, support, SUPPORT, queries, QUERIES, max_new_tokens=8, batch_size=2) == expected
    assert generate_shared(model, support, SUPPORT, queries, QUERIES, max_new_tokens=8) == expected
    assert any(expected) and model.training  # a real output; the model's mode is restored


def test_support_runs_through_the_lm_once(tiny_model):
    """Batch 1 over the support, then only query suffixes and single decoded tokens."""
    support, queries = _episode()
    seen: list[tuple[int, int]] = []
    hook = tiny_model.lm.register_forward_pre_hook(lambda m, a, kw: seen.append(tuple(kw["inputs_embeds"].shape[:2])),
                                                   with_kwargs=True)
    try:
        generate_shared(tiny_model, support, SUPPORT, queries, QUERIES, max_new_tokens=3, batch_size=3)
    finally:
        hook.remove()
    k, tok = tiny_model.num_prefix_tokens, tiny_model.tokenizer

    def positions(prompt: str) -> int:  # text tokens (segment by segment) + k per image
        layout = Prompt.parse(prompt, [None] * prompt.count("<image>")).tokenize(tok).layout()
        return sum(k if item < 0 else 1 for item in layout)

    assert seen[0][0] == 1 and positions(SUPPORT) - 3 <= seen[0][1] <= positions(SUPPORT)
    assert len(seen) > 2 and all(b > 1 for b, _ in seen[1:])  # every later call is a batch of queries
    # query passes hold the query suffix (+ the few boundary tokens the tokenizer merged), never the support
    assert max(length for _, length in seen[1:]) <= max(positions(q) for q in QUERIES) + 3


def test_stop_strings_are_trimmed_like_generate(tiny_model):
    support, queries = _episode()
    free = generate_shared(tiny_model, support, SUPPORT, queries, QUERIES, max_new_tokens=10)
    stop = next(t for t in free if len(t) > 4)[2]  # a character some answer contains mid-way
    stopped = generate_shared(tiny_model, support, SUPPORT, queries, QUERIES, max_new_tokens=10, stop_strings=[stop],
                              batch_size=2)
    assert stopped == [trim(t, [stop]) for t in free]
    assert stopped == _reference(tiny_model, support, queries, QUERIES, max_new_tokens=10, stop_strings=[stop])
    assert stopped != free


def test_plain_generate_stop_strings_unchanged(tiny_model):
    """generate() reuses one StopStringCriteria per tokenizer; results equal trimming unstopped output."""
    imgs = _images(2)
    free = tiny_model.generate([[imgs[0]], [imgs[1]]], ["<image>a", "<image>Q: what?"], max_new_tokens=10)
    stop = next(t for t in free if len(t) > 4)[2]
    stopped = tiny_model.generate([[imgs[0]], [imgs[1]]], ["<image>a", "<image>Q: what?"], max_new_tokens=10,
                                  stop_strings=stop)
    assert stopped == [trim(t, [stop]) for t in free]
    assert stop_string_criteria(tiny_model.tokenizer, [stop]) is stop_string_criteria(tiny_model.tokenizer, [stop])


def test_eos_stops_each_row_on_its_own(tiny_model):
    """An EOS one row produces mid-way pads that row only; shared and full generation still agree."""
    support, queries = _episode()
    tok = tiny_model.tokenizer
    free_ids = _free_ids(tiny_model, support, queries)  # [B, 8] greedy ids, no EOS
    prompt_text = SUPPORT + "".join(QUERIES)

    def only_here(r: int, c: int) -> bool:  # token (r, c): first in row r, absent from other rows and the prompts
        t = free_ids[r, c]
        return (bool(free_ids[r, :c].ne(t).all()) and bool(torch.cat([free_ids[:r], free_ids[r + 1 :]]).ne(t).all())
                and tok.convert_ids_to_tokens(int(t)) not in prompt_text)

    row, col = next((r, c) for r in range(free_ids.shape[0]) for c in range(1, 6) if only_here(r, c))
    tok.eos_token = tok.convert_ids_to_tokens(int(free_ids[row, col]))  # that token now ends a sequence
    shared = generate_shared(tiny_model, support, SUPPORT, queries, QUERIES, max_new_tokens=8, batch_size=2)
    assert shared == _reference(tiny_model, support, queries, QUERIES, max_new_tokens=8)
    decoded = [tok.decode(ids, skip_special_tokens=True).strip() for ids in free_ids.tolist()]
    assert shared[row] == tok.decode(free_ids[row, : col + 1], skip_special_tokens=True).strip() != decoded[row]
    assert [t for i, t in enumerate(shared) if i != row] == [t for i, t in enumerate(decoded) if i != row]


def _free_ids(model, support, queries) -> torch.Tensor:
    from frozen.model.embedding import embed_prompts, left_pad

    embeds, mask = left_pad(embed_prompts(model, [support + q for q in queries], [SUPPORT + p for p in QUERIES]))
    return greedy_uncached(model.lm, embeds, mask, 8, eos_id=-1, pad_id=0)


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_greedy_cached_matches_uncached_with_left_padding(tiny_lm_dirs, kind):
    """The cached loop on an empty cache equals the reference loop, EOS padding included."""
    from transformers import DynamicCache

    from frozen.model.embedding import embed_prompts, left_pad

    model = _model(tiny_lm_dirs[kind]).eval()
    support, queries = _episode()
    embeds, mask = left_pad(embed_prompts(model, [support + q for q in queries], [SUPPORT + p for p in QUERIES]))
    ref = greedy_uncached(model.lm, embeds, mask, 8, eos_id=-1, pad_id=0)
    eos = int(ref[0, 3])
    ref = greedy_uncached(model.lm, embeds, mask, 8, eos_id=eos, pad_id=0)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cached = greedy_cached(model.lm, embeds, mask, positions, DynamicCache(config=model.lm.config), 8, eos, 0)
    assert torch.equal(cached, ref)
    assert (ref[0, 4:] == 0).all()


def test_generate_shared_arguments(tiny_model):
    support, queries = _episode()
    assert generate_shared(tiny_model, support, SUPPORT, [], []) == []
    with pytest.raises(ValueError, match="image lists"):
        generate_shared(tiny_model, support, SUPPORT, queries[:2], QUERIES)
    with pytest.raises(ValueError, match=r"marker\(s\)"):
        generate_shared(tiny_model, support[:1], SUPPORT, queries, QUERIES)
    with pytest.raises(ValueError, match=r"generate_shared decodes greedily.*use generate\(\) for num_beams"):
        generate_shared(tiny_model, support, SUPPORT, queries, QUERIES, num_beams=2)
    with pytest.raises(ValueError, match=r"transformers options \(repetition_penalty\)"):
        generate_shared(tiny_model, support, SUPPORT, queries, QUERIES, repetition_penalty=1.3)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        generate_shared(tiny_model, support, SUPPORT, queries, QUERIES, max_new_tokens=0)
    # nothing shareable (empty support): the plain path answers
    assert generate_shared(tiny_model, [], "", [queries[0]], [QUERIES[0]], max_new_tokens=4) == tiny_model.generate(
        [queries[0]], [QUERIES[0]], max_new_tokens=4
    )


def test_generate_shared_takes_prompt_objects(tiny_model):
    """Prompt objects (images inside) give the same answers as strings + image lists."""
    support, queries = _episode()
    expected = generate_shared(tiny_model, support, SUPPORT, queries, QUERIES, max_new_tokens=4)
    prompts = [Prompt.parse(p, q) for p, q in zip(QUERIES, queries)]
    assert tiny_model.generate_shared(None, Prompt.parse(SUPPORT, support), None, prompts, max_new_tokens=4) == expected
    with pytest.raises(ValueError, match="a Prompt carries its own images"):
        generate_shared(tiny_model, support, Prompt.parse(SUPPORT, support), None, prompts)


def test_bench_smoke_tiny(tmp_path, caption_data):
    """Every entry runs on the tiny LM with one repeat; the JSON has the documented structure."""
    from frozen.bench import cli as bench

    out = tmp_path / "bench.json"
    bench.main(["--lm", "tiny", "--repeats", "1", "--no-memory", "--out", str(out), "--image-size", "32",
                "--train-batch", "2", "--queries", "3", "--prompts", "3", "--gen-batch", "2", "--max-new-tokens", "3",
                "--data-root", str(caption_data), "--shards", "caps/train-000000.tar", "--loader-batches", "2",
                "--jpeg-batches", "1",
                "--packing-batch", "6", "--packing-batches", "1"])
    report = json.loads(out.read_text())
    assert set(report) >= {"date", "device", "machine", "args", "entries"}
    assert list(report["entries"]) == list(bench.ENTRIES)
    for name, entry in report["entries"].items():
        assert {"config", "project", "baseline", "ratio", "speedup", "targets"} <= set(entry), name
        assert entry["project"]["median"] > 0 and entry["baseline"]["median"] > 0
        assert all({"metric", "target", "value", "met"} <= set(t) for t in entry["targets"])
        assert entry["config"]["repeats"] == 1
    assert report["entries"]["fewshot_shared_support"]["identical"] is True
    assert report["entries"]["fewshot_shared_support"]["one_batch"]["identical"] is True
    assert report["entries"]["fewshot_shared_support"]["first_token"]["identical"] is True
    assert report["entries"]["batched_generation"]["identical"] is True
    jpeg = report["entries"]["jpeg_decode"]  # 224-px batches from 640 x 480 JPEGs; workers from frozen.scaling
    workers = jpeg["workers_per_gpu"]
    assert workers["images_per_s_per_gpu"] == pytest.approx(scaling.BATCH / scaling.GPUS / workers["step_s"])
    assert workers["draft"] == math.ceil(workers["images_per_s_per_gpu"] / jpeg["project"]["median"])
    assert workers["full"] == math.ceil(workers["images_per_s_per_gpu"] / jpeg["baseline"]["median"])
    assert 0 < jpeg["pixels"]["mean_abs"] < 1.5 and jpeg["config"]["image_size"] == 224
    assert set(jpeg["decode_only"]) >= {"draft", "full", "pil_full", "speedup", "full_vs_pil"}
    train = report["entries"]["train_step"]
    # FLOPs accounting: the plain step also computes LM weight gradients
    assert train["flops"]["counted"]["plain_step"] > train["flops"]["counted"]["frozen_step"]
    assert train["config"]["lm_dtype"] in ("float32", "bfloat16")
    packing = report["entries"]["train_packing"]  # packed vs padded: same loss, fewer LM positions
    assert packing["equal"]["loss_rel_diff"] <= packing["equal"]["tolerance"]
    positions = packing["lm_positions"]
    # (6 captions may need 2 packed rows wider than the padded batch: the gain needs real batch sizes)
    for side in ("packed", "padded"):
        assert 0 < positions["real"] <= positions[side]["computed"]
        assert positions[side]["computed"] == sum(rows * width for rows, width in positions[side]["rows_x_width"])
    compiled = report["entries"]["train_compiled"]  # the training forward is one graph: no graph break
    assert compiled["graphs"] == 1 and compiled["graph_breaks"] == 0
    stats = packing["config"]["caption_lengths"]
    assert stats["captions"] == 15833 and stats["stats"]["max"] == 48  # the built-in CC3M table


def test_bench_skips_missing_shards(tmp_path):
    from frozen.bench import cli as bench

    out = tmp_path / "bench.json"
    bench.main(["--lm", "tiny", "--repeats", "1", "--only", "data_loader", "--out", str(out),
                "--data-root", str(tmp_path / "nowhere")])
    entry = json.loads(out.read_text())["entries"]["data_loader"]
    assert "make_shards.py easyvqa" in entry["skipped"]


def test_steal_fraction_reads_the_hypervisor_share():
    from frozen.bench.lib import cpu_times, steal_fraction

    before = [100, 0, 50, 800, 0, 0, 0, 50, 7, 0]
    after = [200, 0, 100, 900, 0, 0, 0, 150, 90, 0]  # guest ticks (field 9) are not counted twice
    assert steal_fraction(before, after) == pytest.approx(100 / 350)
    assert steal_fraction(before, before) is None and steal_fraction(None, after) is None
    assert steal_fraction(before[:5], after[:5]) is None
    now = cpu_times()
    if now is not None:  # Linux: /proc/stat has at least the 8 classic fields, counting up
        assert len(now) >= 8 and all(v >= 0 for v in now)


def test_shared_support_ending_in_a_space_with_smollm2_bpe(smollm2_dir):
    """Support "... This is a " + query "dax" tokenises as "a", " dax" in the full prompt, where the
    support alone ends "a", " ": the shared cache must stop before the seam. The LM then sees exactly
    the full prompt, so the answers and the first logits equal the unshared ones."""
    from frozen import FrozenModel

    torch.manual_seed(0)
    model = FrozenModel.from_pretrained("smollm2-135m-instruct-gguf", vision="tiny_cnn", image_size=32)
    tok = model.tokenizer
    imgs = _images(3)
    support_text = "Answer with dax or blicket.\n<image>This is a blicket.\n<image>Q: What is this? A: This is a "
    queries = ["dax", "blicket.\n<image>Q: What is this? A: This is a"]  # the answer right after the seam; a longer one
    query_images = [[], [imgs[2]]]
    support = Prompt.parse(support_text, imgs[:2]).tokenize(tok).layout()
    for query, q_imgs in zip(queries, query_images):  # the precondition: every seam merges
        full = Prompt.parse(support_text + query, imgs[:2] + q_imgs).tokenize(tok).layout()
        assert full[: len(support) - 1] == support[:-1] and full[len(support) - 1] != support[-1]

    logits: list[torch.Tensor] = []  # the LM head's last-position output, call by call
    hook = model.lm.get_output_embeddings().register_forward_hook(lambda m, a, out: logits.append(out[:, -1]))
    try:
        expected = model.generate([imgs[:2] + q for q in query_images], [support_text + q for q in queries],
                                  max_new_tokens=3)
        full_first = logits[0]  # [2, V]: the full prompts' prefill
        logits.clear()
        shared = model.generate_shared(imgs[:2], support_text, query_images, queries, max_new_tokens=3)
        shared_first = logits[1]  # [2, V]: after the support pass (batch 1), the queries' pass
    finally:
        hook.remove()
    assert shared == expected and any(expected)
    torch.testing.assert_close(shared_first, full_first, atol=1e-3, rtol=1e-3)
