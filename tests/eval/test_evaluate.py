"""Evaluation end to end on a tiny model: conditions, shots, exact splits, outputs."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from frozen.config import (
    BindingTaskConfig,
    CaptionTaskConfig,
    EvalSuiteConfig,
    EvaluateConfig,
    LoggerConfig,
    SampleTextConfig,
    VqaTaskConfig,
)
from frozen.core.results import ROW_KEYS
from frozen.data.pipeline import iter_eval_samples
from frozen.errors import DataError, FrozenConfigError
from frozen.eval.context import load_items
from frozen.eval.fewshot import episode_queries, load_episodes
from frozen.eval.plots import panels
from frozen.eval.vqa import DemoPool, vqa_queries
from frozen.model.prompts import sample_shots


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_gpt2):
    from frozen import FrozenModel

    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=32)
    return model.save_pretrained(tmp_path_factory.mktemp("export") / "export")


def suite() -> EvalSuiteConfig:
    return EvalSuiteConfig(name="tiny", tasks={
        "caps": CaptionTaskConfig(shards="caps/val-*.tar", conditions=["image", "no_image"], max_new_tokens=4),
        "vqa": VqaTaskConfig(shards="vqa/vqa-test-*.tar", demo_shards="vqa/vqa-train-*.tar", shots=[0, 2],
                             conditions=["image", "no_image", "text_demos"], num_trials=2, max_new_tokens=3),
        "bind": BindingTaskConfig(ways=[2], inner_shots=[1], task_induction=[False, True],
                                  conditions=["image", "no_image"], num_episodes=6, num_trials=2, max_new_tokens=3),
    })


def make_cfg(export, data_root, run_dir, **kw) -> EvaluateConfig:
    return EvaluateConfig(eval=suite(), load_path=str(export), data_root=str(data_root), run_dir=str(run_dir),
                          batch_size=4, device="cpu", **kw)


def test_end_to_end_writes_results_with_the_schema(export_dir, caption_data, tmp_path):
    from frozen.eval.run import evaluate

    rows = evaluate(make_cfg(export_dir, caption_data, tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["rows"] == rows
    assert all(set(ROW_KEYS) <= set(r) and list(r)[:2] == ["task", "metric"] for r in rows)
    settings = {(r["task"], r["metric"], r.get("shots"), r["condition"]) for r in rows}
    assert ("caps", "CIDEr", 0, "no_image") in settings and ("caps", "perplexity", 0, "image") in settings
    assert {("vqa", "vqa_accuracy", s, c) for s in (0, 2) for c in ("image", "no_image")} <= settings
    assert ("vqa", "vqa_accuracy", 2, "text_demos") in settings
    assert ("vqa", "vqa_accuracy", 0, "text_demos") not in settings
    assert ("vqa", "vqa_accuracy[yes/no]", 0, "image") in settings
    episodes = {(r["task"], r["metric"], r["ways"], r["inner_shots"], r["repeats"], r["task_induction"], r["condition"])
                for r in rows if r["task"] == "bind"}
    assert episodes == {("bind", m, 2, 1, 0, ti, c) for m in ("accuracy", "accuracy_strict") for ti in (False, True)
                        for c in ("image", "no_image")}
    assert all("shots" not in r for r in rows if r["task"] == "bind")
    assert results["templates"]["vqa"]["query"] == "Q: {question} A:" and results["trained_blind"] is False
    by = {(r["task"], r["metric"], r.get("shots"), r["condition"]): r for r in rows}
    assert by[("vqa", "vqa_accuracy", 0, "image")]["num_examples"] == 24
    assert by[("vqa", "vqa_accuracy", 0, "image")]["num_trials"] == 1
    assert by[("vqa", "vqa_accuracy", 2, "image")]["num_trials"] == 2
    assert by[("vqa", "vqa_accuracy", 2, "image")]["demo_pool_size"] == 40  # the whole train split
    assert "demo_pool_size" not in by[("vqa", "vqa_accuracy", 0, "image")]
    assert by[("caps", "BLEU-4", 0, "image")]["num_examples"] == 16
    assert all(0.0 <= r["mean"] <= 1.0 for r in rows if r["metric"].startswith(("vqa", "accuracy")))
    # provenance: config, commit, checkpoint hash
    weights = (export_dir / "model.safetensors").read_bytes()
    assert results["checkpoint_sha256"] == hashlib.sha256(weights).hexdigest()
    assert results["config"]["eval"]["name"] == "tiny" and "git_commit" in results
    assert set(results["timings_s"]) == {"caps", "vqa", "bind"} and all(v > 0 for v in results["timings_s"].values())
    # every prediction kept: 24 questions x (1 + 2 + 2 + 2 + 2 trials of shots/conditions) ...
    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    vqa_preds = [p for p in preds if p["task"] == "vqa"]
    assert len(vqa_preds) == 24 * (2 + 3 * 2)  # 0-shot: image, no_image; 2-shot: 3 conditions x 2 trials
    assert {"prompt", "prediction", "target", "score"} <= set(vqa_preds[0])
    # fewshot.png beside results.json: a panel per task, drawn from these rows
    assert Image.open(tmp_path / "fewshot.png").size == (1500, 410)
    caps, vqa, bind = panels(rows)
    assert (caps.metric, vqa.metric, bind.metric, bind.bars) == ("CIDEr", "vqa_accuracy", "accuracy", True)
    assert list(vqa.series) == ["image", "no_image", "text_demos"] and vqa.xs == [0, 2]
    assert [(p.x, p.y) for p in vqa.series["image"]] == [(s, by[("vqa", "vqa_accuracy", s, "image")]["mean"])
                                                         for s in (0, 2)]
    assert bind.chance == {"2-way 1 inner shot": 0.5, "2-way 1 inner shot +induction": 0.5}


class FakeRun:
    """What RunLogger needs of a W&B run; records every log call."""

    dir = "fake-wandb-run"

    def __init__(self):
        self.logged: list[tuple[dict, int]] = []

    def log(self, data, step=None):
        self.logged.append((data, step))

    def finish(self):
        pass


def test_wandb_gets_the_results_table_and_the_figure(export_dir, caption_data, tmp_path, monkeypatch):
    import wandb

    from frozen.eval.run import evaluate

    run = FakeRun()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "init", lambda **kw: run)
    cfg = make_cfg(export_dir, caption_data, tmp_path, tasks=["bind"],
                   logger=LoggerConfig(backend="wandb", project="frozen-test"))
    rows = evaluate(cfg)
    logged = dict(kv for data, _ in run.logged for kv in data.items())
    assert set(logged) == {"eval/results", "eval/fewshot"} and all(step == 0 for _, step in run.logged)
    table = logged["eval/results"]
    assert isinstance(table, wandb.Table) and table.columns == list(rows[0])
    assert table.data == [[r[c] for c in table.columns] for r in rows]
    image = logged["eval/fewshot"]
    assert isinstance(image, wandb.Image)
    written = Image.open(tmp_path / "fewshot.png")
    assert (np.asarray(image.image) == np.asarray(written)).all()


def test_two_ranks_give_the_same_records_as_one(export_dir, caption_data, tmp_path):
    """Exact distributed evaluation: split by index, gathered, no duplicates or drops."""
    from frozen.core import dist
    from frozen.eval.run import evaluate

    evaluate(make_cfg(export_dir, caption_data, tmp_path / "one"))
    dist.spawn(evaluate, (make_cfg(export_dir, caption_data, tmp_path / "two", num_gpus=2),), num_local=2)
    one = json.loads((tmp_path / "one" / "results.json").read_text())["rows"]
    two = json.loads((tmp_path / "two" / "results.json").read_text())["rows"]
    assert len(one) == len(two)
    for a, b in zip(one, two):  # perplexity sums float losses in another batch order: equal to ~1e-7
        assert {k: v for k, v in a.items() if k != "mean"} == {k: v for k, v in b.items() if k != "mean"}
        assert a["mean"] == pytest.approx(b["mean"], rel=1e-6)
    p1 = (tmp_path / "one" / "predictions.jsonl").read_text().splitlines()
    p2 = (tmp_path / "two" / "predictions.jsonl").read_text().splitlines()
    assert sorted(p1) == sorted(p2) and len(set(p1)) == len(p1)


def _items(caption_data, shards="vqa/vqa-test-*.tar"):
    return list(iter_eval_samples(shards, data_root=str(caption_data), image_size=32))


def test_no_image_and_text_demo_conditions_drop_the_right_images(caption_data):
    items = _items(caption_data)[:3]
    pool = DemoPool(_items(caption_data, "vqa/vqa-train-*.tar"))
    task = VqaTaskConfig(prompt="Q: {question} A:")
    for condition, demo_images, query_image in [("image", True, True), ("no_image", False, False),
                                                ("text_demos", False, True), ("black_images", True, True)]:
        for q in vqa_queries(items, pool, task, shots=2, condition=condition, seed=0, trial=0):
            assert q.prompt.count("<image>") == len(q.images) == 2 * demo_images + query_image
            lines = q.prompt.split("\n")
            assert len(lines) == 3 and lines[-1].endswith("A:") and lines[0].rsplit("A: ", 1)[1]
            assert lines[-1].startswith("<image>") == query_image
    blind0 = list(vqa_queries(items, None, task, shots=0, condition="no_image", seed=0, trial=0))
    assert blind0[0].images == [] and blind0[0].prompt == f"Q: {items[0].meta['question']} A:"


def test_demonstrations_are_seeded_and_never_about_the_query_image(caption_data):
    items = _items(caption_data, "vqa/vqa-train-*.tar")
    pool = DemoPool(items)
    task = VqaTaskConfig()
    for trial in range(3):
        a = list(vqa_queries(items, pool, task, shots=4, condition="text_demos", seed=7, trial=trial))
        b = list(vqa_queries(items, pool, task, shots=4, condition="text_demos", seed=7, trial=trial))
        assert [q.prompt for q in a] == [q.prompt for q in b]
    for ex in items:
        excluded = pool.excluded_for(ex.key, ex.meta)
        assert pool.by_key[ex.key] in excluded and len(excluded) == 2  # itself + the other question on its image
        picks = set().union(*(sample_shots(len(pool), 4, random.Random(s), exclude=excluded) for s in range(20)))
        assert not picks & excluded


def test_max_examples_takes_the_first_items_across_ranks(caption_data):
    task = VqaTaskConfig(shards="vqa/vqa-test-*.tar")
    text, root = SampleTextConfig(), str(caption_data)
    everything = [e.key for e in load_items(task, text, data_root=root, image_size=32, rank=0, world_size=1,
                                              limit=None)]
    split = [e.key for r in range(3)
             for e in load_items(task, text, data_root=root, image_size=32, rank=r, world_size=3, limit=7)]
    assert sorted(split) == sorted(everything[:7])


def test_unknown_condition_and_missing_shards_are_clear_errors(export_dir, caption_data, tmp_path):
    from frozen.eval.run import evaluate

    cfg = make_cfg(export_dir, caption_data, tmp_path)
    with pytest.raises(FrozenConfigError, match="unknown condition 'deaf'"):
        EvalSuiteConfig(tasks={"v": {"kind": "vqa", "shards": "vqa/vqa-test-*.tar", "conditions": ["deaf"]}})
    with pytest.raises(FrozenConfigError, match="task v: unknown condition 'blind'; use image, no_image") as err:
        EvalSuiteConfig(tasks={"v": {"kind": "vqa", "conditions": ["image", "blind"]}})
    assert len(str(err.value).splitlines()) == 1
    cfg.eval.tasks = {"v": VqaTaskConfig(shards=None)}
    with pytest.raises(DataError, match="set shards="):
        evaluate(cfg)
    with pytest.raises(Exception, match="holds no frozen_config.json"):
        evaluate(make_cfg(tmp_path, caption_data, tmp_path / "x"))


def test_shared_support_groups_answer_like_separate_prompts(export_dir, tmp_path, monkeypatch):
    """Several queries per binding support set: the answerer reuses the support's KV cache and gets
    the same predictions as generating every full prompt on its own."""
    from frozen import FrozenModel
    from frozen.eval.run import evaluate

    task = BindingTaskConfig(ways=[2], inner_shots=[1], task_induction=[True], conditions=["image", "no_image"],
                             num_episodes=3, queries_per_episode=4, num_trials=1, max_new_tokens=3)
    cfg = EvaluateConfig(eval=EvalSuiteConfig(name="shared", tasks={"bind": task}), load_path=str(export_dir),
                         data_root=str(tmp_path), run_dir=str(tmp_path / "shared"), batch_size=3, device="cpu")
    calls = []
    original = FrozenModel.generate_shared
    monkeypatch.setattr(FrozenModel, "generate_shared",
                        lambda self, *a, **k: calls.append(len(a[3])) or original(self, *a, **k))
    evaluate(cfg)
    assert calls == [4] * 6  # 3 support sets x 2 conditions, 4 queries each
    preds = [json.loads(line) for line in (tmp_path / "shared" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 24 and len({p["id"] for p in preds}) == 12

    model = FrozenModel.from_pretrained(str(export_dir))
    episodes = load_episodes(task, ways=2, shots=1, repeats=0, seed=0)
    for condition in ("image", "no_image"):
        queries = list(episode_queries(episodes, induction=True, condition=condition))
        alone = model.generate([q.images for q in queries], [q.prompt for q in queries], max_new_tokens=3,
                               stop_strings=["\n"])
        got = {p["id"]: p["raw"] for p in preds if p["condition"] == condition and p["task_induction"]}
        assert got == {q.id: text for q, text in zip(queries, alone)}


def test_text_first_puts_the_neutral_line_before_the_query_image(caption_data):
    """The position check's layout: the neutral line, the query's <image>, the query prompt; the rest as `image`."""
    from frozen.eval.position import POSITION_LINE

    items = _items(caption_data)[:3]
    pool = DemoPool(_items(caption_data, "vqa/vqa-train-*.tar"))
    task = VqaTaskConfig(prompt="Q: {question} A:")
    zero = list(vqa_queries(items, None, task, shots=0, condition="text_first", seed=0, trial=0))
    for q, ex in zip(zero, items):
        assert q.prompt == POSITION_LINE + f"<image>Q: {ex.meta['question']} A:"
        assert len(q.images) == 1 and torch.equal(q.images[0], ex.image)
    assert POSITION_LINE == "Answer the question about the picture.\n"
    # with demonstrations: the same demonstrations (text, images, keys) as `image`; the line sits before the query
    first = list(vqa_queries(items, pool, task, shots=2, condition="image", seed=0, trial=1))
    later = list(vqa_queries(items, pool, task, shots=2, condition="text_first", seed=0, trial=1))
    for a, b in zip(first, later):
        demos, query = a.prompt.rsplit("\n", 1)
        assert b.prompt == f"{demos}\n{POSITION_LINE}{query}" and query.startswith("<image>Q: ")
        assert a.meta["demo_keys"] == b.meta["demo_keys"] and len(b.images) == 3
        assert all(torch.equal(x, y) for x, y in zip(a.images, b.images))


def test_text_first_runs_at_zero_shots_and_is_recorded(export_dir, caption_data, tmp_path, capsys):
    from frozen.eval.position import POSITION_LINE
    from frozen.eval.run import evaluate

    vqa = VqaTaskConfig(shards="vqa/vqa-test-*.tar", demo_shards="vqa/vqa-train-*.tar", shots=[0, 2],
                        conditions=["image", "text_first"], num_trials=1, max_new_tokens=2)
    rows = evaluate(EvaluateConfig(eval=EvalSuiteConfig(name="tiny", tasks={"vqa": vqa}), load_path=str(export_dir),
                                   data_root=str(caption_data), run_dir=str(tmp_path), batch_size=8, device="cpu"))
    results = json.loads((tmp_path / "results.json").read_text())
    settings = {(r["metric"], r["shots"], r["condition"]) for r in results["rows"]}
    assert ("vqa_accuracy", 0, "text_first") in settings and ("vqa_accuracy[yes/no]", 0, "text_first") in settings
    assert not any(s == 2 and c == "text_first" for _, s, c in settings)  # 0 shots only
    first = next(r for r in rows if (r["metric"], r["condition"]) == ("vqa_accuracy", "text_first"))
    assert first["num_examples"] == 24 and 0.0 <= first["mean"] <= 1.0
    assert results["templates"]["vqa"]["text_first_line"] == POSITION_LINE
    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    later = [p for p in preds if p["condition"] == "text_first"]
    assert len(later) == 24 and all(p["prompt"].startswith(POSITION_LINE + "<image>Q: ") for p in later)
    gap = next(r for r in rows if (r["metric"], r["condition"]) == ("vqa_accuracy", "image"))["mean"] - first["mean"]
    assert f"vqa: position gap (image − text_first) at 0 shots: {gap:.3f} [" in capsys.readouterr().err


def test_text_first_is_refused_where_it_does_not_apply():
    from frozen.eval.run import for_blind_model

    with pytest.raises(FrozenConfigError, match="text_first is the 0-shot VQA position check; remove it"):
        CaptionTaskConfig(conditions=["image", "text_first"])
    with pytest.raises(FrozenConfigError, match="text_first is the 0-shot VQA position check"):
        BindingTaskConfig(conditions=["text_first"])
    with pytest.raises(FrozenConfigError, match=r"text_first runs at 0 shots only, and shots=\[1, 4\]; add 0"):
        VqaTaskConfig(shots=[1, 4], conditions=["image", "text_first"])
    # a blind model reads no image: its image condition becomes black_images and the position check is left out
    blind = for_blind_model({"v": VqaTaskConfig(conditions=["image", "no_image", "text_first"])})
    assert blind["v"].conditions == ["black_images", "no_image"]
