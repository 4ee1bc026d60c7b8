"""The answerer between generation and scoring (frozen.eval.answer): what reaches the metric (max_answer_words),
stops at a newline, batching, shared supports, prompts too long for the LM, black images, and the id order of
the gathered records. The tiny LM is scripted (frozen.core.tiny.script_lm) so its answers are known."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from frozen.config import VqaTaskConfig
from frozen.eval.answer import TOO_LONG, Answerer, Query, black_out, postprocess, skip_text
from frozen.model.prompts import Prompt

TEXT = "red blue green\nQ"


def test_max_answer_words_keeps_exactly_n_words():
    assert postprocess("a b c", 2) == "a b"
    assert postprocess("a b c", 1) == "a"
    assert postprocess("  a   b ", 3) == "a b"
    assert postprocess("a b c", None) == "a b c"
    assert postprocess("  a  b\t", None) == "a  b"  # no limit: only stripped
    assert postprocess("a b c", 0) == "a b c"  # 0 reads as no limit, like None


def test_skip_text():
    assert skip_text({}) == "" and skip_text({TOO_LONG: 0}) == ""
    assert skip_text({TOO_LONG: 3}) == ", skipped prompt_too_long=3"
    assert skip_text({"a": 1, "b": 2}) == ", skipped a=1, skipped b=2"


def test_black_out_replaces_every_image_and_keeps_the_prompts():
    img = torch.rand(3, 8, 8)
    support, query = Prompt.parse("<image>a dax.\n", [img]), Prompt.parse("<image>Q: what? A:", [img])
    plain = Query("1", "<image>x", [img], target="t", meta={"k": 1})
    grouped = Query.grouped("2", support, query, group="g", target="u")
    out = list(black_out([plain, grouped], 8))
    assert [q.prompt for q in out] == [plain.prompt, grouped.prompt] and out[0].meta == {"k": 1}
    for q in out:
        assert all(torch.equal(i, torch.zeros(3, 8, 8)) for i in q.images)
    assert all(torch.equal(i, torch.zeros(3, 8, 8)) for p in out[1].parts for i in p.images)
    assert [p.texts for p in out[1].parts] == [support.texts, query.texts]
    assert len(out[0].images) == 1 and len(out[1].images) == 2
    assert torch.equal(img, plain.images[0]) and out[0].parts is None  # the inputs are not changed


def _task(**kw):
    return VqaTaskConfig(shards="x", **({"max_new_tokens": 12} | kw))


def test_answers_stop_at_a_newline_and_keep_max_answer_words(scripted):
    imgs = [torch.rand(3, 32, 32) for _ in range(3)]
    queries = [Query(str(i), "<image>Q: what? A:", [imgs[i]], target=["red"], meta={"n": i}) for i in range(3)]
    answerer = Answerer(scripted, batch_size=2, autocast=nullcontext(), image_size=32)
    records, too_long = answerer.generate(queries, _task(max_answer_words=2))
    assert too_long == 0 and [r["id"] for r in records] == ["0", "1", "2"]
    assert {r["raw"] for r in records} == {"red blue green"} and {r["prediction"] for r in records} == {"red blue"}
    assert records[1] == {"id": "1", "prompt": "<image>Q: what? A:", "prediction": "red blue",
                          "raw": "red blue green", "target": ["red"], "n": 1}
    records, _ = answerer.generate(queries[:1], _task())
    assert records[0]["prediction"] == "red blue green"


def test_batches_shared_supports_and_prompts_too_long(scripted):
    imgs = [torch.rand(3, 32, 32) for _ in range(4)]
    support = Prompt.parse("<image>This is a dax.\n", [imgs[0]])
    grouped = [Query.grouped(f"g{i}", support, Prompt.parse("<image>Q: what? A:", [imgs[i]]), group="s",
                             target="dax") for i in (1, 2)]
    alone = Query.grouped("g3", support, Prompt.parse("<image>Q: and? A:", [imgs[3]]), group="t", target="dax")
    limit = scripted.lm.config.n_positions
    long = Query("long", "<image>" + " dax" * limit, [imgs[0]], target="x")
    calls, options = [], []
    real_generate, real_shared = scripted.generate, scripted.generate_shared

    def generate(*a, **k):
        calls.append(("generate", len(a[1])))
        options.append(k)
        return real_generate(*a, **k)

    def shared(*a, **k):
        calls.append(("shared", len(a[3])))
        options.append(k)
        assert a[1] is support and [q.texts for q in a[3]] == [("", "Q: what? A:")] * 2
        return real_shared(*a, **k)

    scripted.generate, scripted.generate_shared = generate, shared
    answerer = Answerer(scripted, batch_size=2, autocast=nullcontext(), image_size=32)
    assert not answerer.fits(long, 12) and answerer.fits(grouped[0], 12)
    records, skipped = answerer.answer([grouped[0], long, grouped[1], alone, long], _task(min_new_tokens=1),
                                       "image")
    assert skipped == {TOO_LONG: 2}
    assert [r["id"] for r in records] == ["g1", "g2", "g3"] and {r["raw"] for r in records} == {"red blue green"}
    # the two questions about one support share its cache; a group of one is generated as a plain prompt
    assert calls == [("shared", 2), ("generate", 1)]
    assert options == [{"max_new_tokens": 12, "stop_strings": ["\n"], "batch_size": 2, "min_new_tokens": 1},
                       {"max_new_tokens": 12, "stop_strings": ["\n"], "min_new_tokens": 1}]
    records, _ = answerer.answer(grouped + [alone], _task(max_new_tokens=2), "image")  # the task's token budget
    two = scripted.tokenizer.decode(scripted.tokenizer(TEXT, add_special_tokens=False).input_ids[:2]).strip()
    assert [r["raw"] for r in records] == [two] * 3 and two != "red blue green"
    calls.clear()
    answerer.answer([Query(str(i), "<image>Q: a? A:", [imgs[i]], target="x") for i in range(3)], _task(), "image")
    assert calls == [("generate", 2), ("generate", 1)]  # batch_size 2: a full batch, then the rest
    calls.clear()
    records, skipped = answerer.answer([Query("z", "<image>Q: a? A:", [imgs[0]], target="x")], _task(), "image")
    assert skipped == {} and calls == [("generate", 1)]


def test_a_prompt_fits_up_to_the_lms_last_position(tiny_model, monkeypatch):
    from frozen.eval import answer as answer_module
    from frozen.model.embedding import positions_needed

    answerer = Answerer(tiny_model, batch_size=2, autocast=nullcontext(), image_size=32)
    query = Query("q", "<image>Q: what? A:", [torch.rand(3, 32, 32)], target="x")
    needed = positions_needed(Prompt.parse(query.prompt, query.images).tokenize(tiny_model.tokenizer),
                              tiny_model.model_cfg.num_prefix_tokens)
    limit = tiny_model.lm.config.n_positions
    assert answerer.fits(query, limit - needed) and not answerer.fits(query, limit - needed + 1)
    monkeypatch.setattr(answer_module, "context_limit", lambda lm: None)  # an LM without a position limit
    assert answerer.fits(query, 10 * limit)


def test_black_images_condition_sees_only_black_images(tiny_model, monkeypatch):
    seen = []

    def generate(images, prompts, **kw):
        seen.extend(img for imgs in images for img in imgs)
        return ["x"] * len(prompts)

    monkeypatch.setattr(tiny_model, "generate", generate)
    answerer = Answerer(tiny_model, batch_size=4, autocast=nullcontext(), image_size=32)
    queries = [Query(str(i), "<image>Q: a? A:", [torch.rand(3, 32, 32)], target="x") for i in range(2)]
    answerer.answer(queries, _task(), "black_images")
    assert len(seen) == 2 and all(torch.equal(i, torch.zeros(3, 32, 32)) for i in seen)
    seen.clear()
    answerer.answer(queries, _task(), "image")
    assert all(i.abs().sum() > 0 for i in seen)


def test_gathered_records_are_in_id_order():
    answerer = Answerer.__new__(Answerer)
    records = [{"id": "b"}, {"id": 10}, {"id": "a"}, {"id": 2}]
    assert [r["id"] for r in answerer.gather(records)] == [10, 2, "a", "b"]  # by id as text
