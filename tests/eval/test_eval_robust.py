"""Evaluation items whose prompt does not fit the LM: counted under their own reason, the rest scored."""

from __future__ import annotations

import json

import torch
from rich.console import Console

from frozen.config import EvalSuiteConfig, EvaluateConfig, ModelConfig, VqaTaskConfig
from frozen.core.results import rows_table
from frozen.core.tiny import save_tiny_lm, tiny_tokenizer
from frozen.data.pipeline import iter_eval_samples
from frozen.eval.vqa import DemoPool, vqa_queries
from frozen.model.embedding import positions_needed
from frozen.model.prompts import Prompt


def _needed(caption_data, task: VqaTaskConfig, shots: int) -> dict[str, int]:
    """Positions each query of ``task`` needs (prompt + max_new_tokens), by query id."""
    def samples(shards):
        return list(iter_eval_samples(shards, data_root=str(caption_data), image_size=32))

    pool = DemoPool(samples(task.demo_shards))
    tok, k = tiny_tokenizer(), ModelConfig().num_prefix_tokens
    queries = vqa_queries(samples(task.shards), pool, task, shots=shots, condition="image", seed=0, trial=0)
    return {q.id: positions_needed(Prompt.parse(q.prompt, q.images).tokenize(tok), k) + task.max_new_tokens
            for q in queries}


def _evaluate_on_short_lm(tmp_path, positions: int, name: str, task, data_root) -> list[dict]:
    """Evaluate ``task`` with a fresh export around a tiny GPT-2 of ``positions`` positions; its rows."""
    from frozen import FrozenModel
    from frozen.eval.run import evaluate

    torch.manual_seed(0)
    lm = save_tiny_lm(tmp_path / "lm", "gpt2", positions=positions)
    export = FrozenModel.from_pretrained(str(lm), vision="tiny_cnn", image_size=32).save_pretrained(tmp_path / "ex")
    cfg = EvaluateConfig(eval=EvalSuiteConfig(name="long", tasks={name: task}), load_path=str(export),
                         data_root=str(data_root), run_dir=str(tmp_path / "run"), batch_size=4, device="cpu")
    return evaluate(cfg)


def test_over_long_vqa_prompts_are_counted_and_the_rest_scored(caption_data, tmp_path):
    """2-shot prompts around the LM's context length: those past it are skipped (today: ContextLengthError)."""

    task = VqaTaskConfig(shards="vqa/vqa-test-*.tar", demo_shards="vqa/vqa-train-*.tar", shots=[0, 2],
                         conditions=["image", "black_images"], num_trials=1, max_new_tokens=3)
    needed = _needed(caption_data, task, shots=2)
    limit = sorted(needed.values())[len(needed) // 2]
    too_long = {qid for qid, n in needed.items() if n > limit}
    assert 0 < len(too_long) < len(needed) and max(_needed(caption_data, task, shots=0).values()) <= limit

    rows = _evaluate_on_short_lm(tmp_path, limit, "vqa", task, caption_data)

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["rows"] == rows
    by = {(r["metric"], r["shots"], r["condition"]): r for r in rows}
    for condition in ("image", "black_images"):
        two = by[("vqa_accuracy", 2, condition)]
        assert two["skipped"] == {"prompt_too_long": len(too_long)}
        assert two["num_examples"] == len(needed) - len(too_long) and 0.0 <= two["mean"] <= 1.0
        assert "skipped" not in by[("vqa_accuracy", 0, condition)]
        assert by[("vqa_accuracy", 0, condition)]["num_examples"] == len(needed)
    preds = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert {p["id"] for p in preds if p["shots"] == 2} == set(needed) - too_long

    console = Console(record=True, width=200)
    console.print(rows_table(rows, title="t"))
    text = console.export_text()
    assert "skipped" in text and f"prompt_too_long {len(too_long)}" in text


def test_results_table_shows_rows_without_a_score():
    rows = [{"task": "t", "metric": "accuracy", "shots": 0, "condition": "image", "mean": None, "stddev": None,
             "num_examples": 0, "num_trials": 0, "skipped": {"prompt_too_long": 5}},
            {"task": "t", "metric": "accuracy", "shots": 1, "condition": "image", "mean": 0.5, "stddev": 0.0,
             "num_examples": 4, "num_trials": 1}]
    console = Console(record=True, width=200)
    console.print(rows_table(rows, title="t"))
    lines = [line for line in console.export_text().splitlines() if "accuracy" in line]
    assert "–" in lines[0] and "prompt_too_long 5" in lines[0] and "0.5000" in lines[1]
    console = Console(record=True, width=200)
    console.print(rows_table(rows[1:], title="t"))
    assert "skipped" not in console.export_text()


def test_full_disk_leaves_earlier_results_intact(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    import pytest

    from frozen.errors import WriteError
    from frozen.eval.store import write_results

    rows = [{"task": "t", "metric": "m", "mean": 0.5}]
    write_results(tmp_path, rows, [{"id": "a"}], config={}, checkpoint=None, submissions={"s.json": []})
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    original = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        if self.name.startswith("predictions"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(WriteError) as err:
        write_results(tmp_path, rows + rows, [{"id": "b"}], config={}, checkpoint=None)
    line = str(err.value)
    assert line.startswith(f"cannot write {tmp_path / 'predictions.jsonl'}: the disk is full (") and "\n" not in line
    assert f"free on {tmp_path}); the results already in {tmp_path} are as they were" in line
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # no .tmp left


def test_episode_settings_past_the_context_have_no_mean_and_the_rest_run(tmp_path):
    """Binding with shared supports: the settings whose prompts do not fit report mean null and their
    count; the others are scored as usual (today: ContextLengthError)."""
    from frozen.config import BindingTaskConfig
    from frozen.eval.fewshot import episode_queries, load_episodes

    task = BindingTaskConfig(ways=[2], inner_shots=[1], task_induction=[False, True], conditions=["image", "no_image"],
                             num_episodes=3, queries_per_episode=2, num_trials=1, max_new_tokens=3)
    tok, k = tiny_tokenizer(), ModelConfig().num_prefix_tokens
    episodes = load_episodes(task, ways=2, shots=1, repeats=0, seed=0)
    needed = {(ti, c): [positions_needed(Prompt.parse(q.prompt, q.images).tokenize(tok), k) + 3
                        for q in episode_queries(episodes, induction=ti, condition=c)]
              for ti in (False, True) for c in ("image", "no_image")}
    limit = max(max(v) for v in needed.values()) - 1
    expected = {key: sum(n > limit for n in v) for key, v in needed.items()}
    assert expected[(True, "image")] == 6 and 0 in expected.values()

    rows = _evaluate_on_short_lm(tmp_path, limit, "bind", task, tmp_path)
    for r in rows:
        skipped = expected[(r["task_induction"], r["condition"])]
        assert r.get("skipped", {}) == ({"prompt_too_long": skipped} if skipped else {})
        assert r["num_examples"] == 6 - skipped
        assert (r["mean"] is None) == (skipped == 6) and (r["num_trials"] == 0) == (skipped == 6)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["rows"] == rows
