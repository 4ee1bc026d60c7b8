"""The evaluation protocol end to end, with ``generate`` stubbed to return known answers: scores
against values computed independently (the official vqaEval.py, pycocoevalcap on every reference,
per-token perplexity by hand), conditions, test splits, train-blind models, preset schemas."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pytest
import torch

from frozen.config import (
    BindingTaskConfig,
    CaptionTaskConfig,
    DataConfig,
    EvalSuiteConfig,
    EvaluateConfig,
    SampleTextConfig,
    VqaTaskConfig,
)
from frozen.errors import DataError, FrozenConfigError
from frozen.eval.answer import black_out
from frozen.eval.context import load_items
from frozen.eval.fewshot import episode_queries, load_episodes
from frozen.eval.metrics import caption_scores
from frozen.eval.vqa import DemoPool, vqa_queries

SIZE = 32  # the tiny export's image size


def _png(level: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (level, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path, samples: list[dict]) -> None:
    """One shard; sample i gets a solid image of red level 20 * i (the stub reads i back)."""
    import webdataset as wds

    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for i, meta in enumerate(samples):
            sink.write({"__key__": f"s{i:04d}", "png": _png(20 * i), "json": json.dumps(meta).encode()})


def _index(image: torch.Tensor) -> int:
    return round(float(image[0].mean()) * 255 / 20)  # [3, S, S] in [0, 1] -> sample index


# Split answers (so official accuracy, exact match on the first answer and the normalised forms all
# differ) and two answer types with different means.
VQA = [  # (question, answers, answer type, prediction)
    ("what color is it?", ["red"] * 2 + ["blue"] * 8, "other", "red"),  # official 0.6, first-answer match 1
    ("what is on it?", ["a cat"] * 3 + ["dog"] * 7, "other", "Cat."),  # normalised on both sides: 0.9
    ("is it big?", ["yes"] * 10, "yes/no", "yes."),  # unanimous, not normalised: 0
    ("is it red?", ["no"] * 4 + ["yes"] * 6, "yes/no", "no"),  # 1.0
    ("how many?", ["2"] * 9 + ["3"], "number", "two"),  # split: "two" -> "2": 1.0
    ("what shape?", ["square"] * 10, "other", "square"),  # 1.0
]
CAPTIONS = [  # references of different lengths; the stub predicts the first reference of image i+1
    ["a red square on black", "a small red square", "red"],
    ["a blue bar", "one blue bar lying flat on a black background", "bar"],
    ["a green dot", "green", "a tiny green dot in the middle of the picture"],
    ["a big yellow square", "yellow square", "a square"],
]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_gpt2):
    from frozen import FrozenModel

    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=SIZE)
    return model.save_pretrained(tmp_path_factory.mktemp("export") / "export")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("protocol_data")
    _write(root / "vqa" / "val-000000.tar", [
        {"question": q, "answers": a, "answer_type": t, "question_id": 500 + i, "image_id": i}
        for i, (q, a, t, _) in enumerate(VQA)])
    _write(root / "vqa" / "test-000000.tar", [
        {"question": q, "question_id": 900 + i, "image_id": i} for i, (q, _, _, _) in enumerate(VQA)])
    _write(root / "caps" / "multi-000000.tar", [{"captions": refs} for refs in CAPTIONS])
    _write(root / "caps" / "single-000000.tar", [{"captions": [refs[-1]]} for refs in CAPTIONS])
    return root


class StubGenerate:
    """``FrozenModel.generate`` replaced: VQA prompts get VQA's prediction for their question,
    captions get a caption chosen by the image's index; every call's images are recorded."""

    def __init__(self):
        self.calls: list[tuple[str, list]] = []

    def __call__(self, model, images, prompts, **kwargs):
        out = []
        for imgs, prompt in zip(images, prompts):
            self.calls.append((prompt, list(imgs)))
            question = re.search(r"Q: (.*?) A:$", prompt)
            if question:
                out.append(next(p for q, _, _, p in VQA if q == question.group(1)))
            elif imgs:
                out.append(CAPTIONS[(_index(imgs[-1]) + 1) % len(CAPTIONS)][0])
            else:
                out.append("a picture")
        return out


def _evaluate(export_dir, data_root, tmp_path, tasks, monkeypatch, batch_size=4, **overrides):
    from frozen import FrozenModel
    from frozen.eval.run import evaluate

    stub = StubGenerate()
    monkeypatch.setattr(FrozenModel, "generate", lambda self, *args, **kwargs: stub(self, *args, **kwargs))
    cfg = EvaluateConfig(eval=EvalSuiteConfig(name="protocol", tasks=tasks), load_path=str(export_dir),
                         data_root=str(data_root), run_dir=str(tmp_path), batch_size=batch_size, device="cpu",
                         **overrides)
    return evaluate(cfg), stub


def test_vqa_rows_are_official_accuracy_overall_and_per_answer_type(export_dir, data_root, tmp_path, monkeypatch):
    from official_vqaEval import official_accuracy

    task = VqaTaskConfig(shards="vqa/val-*.tar", conditions=["image"], max_new_tokens=3)
    rows, _ = _evaluate(export_dir, data_root, tmp_path, {"v": task}, monkeypatch)
    by = {r["metric"]: r for r in rows}
    scores = [official_accuracy(p, a) for _, a, _, p in VQA]
    assert scores == pytest.approx([0.6, 0.9, 0.0, 1.0, 1.0, 1.0])  # hand-checked above
    assert by["vqa_accuracy"]["mean"] == pytest.approx(sum(scores) / len(scores), abs=1e-12)
    assert by["vqa_accuracy"]["num_examples"] == len(VQA)
    for answer_type in ("other", "yes/no", "number"):
        mine = [s for s, (_, _, t, _) in zip(scores, VQA) if t == answer_type]
        row = by[f"vqa_accuracy[{answer_type}]"]
        assert row["mean"] == pytest.approx(sum(mine) / len(mine), abs=1e-12)
        assert row["num_examples"] == len(mine)
    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["score"] for p in preds) == pytest.approx(sorted(scores))


def test_caption_rows_use_every_reference_and_per_token_perplexity(export_dir, data_root, tmp_path, monkeypatch):
    from frozen import FrozenModel
    from frozen.data.collate import Collator

    tasks = {"multi": CaptionTaskConfig(shards="caps/multi-*.tar", conditions=["image", "no_image"]),
             "single": CaptionTaskConfig(shards="caps/single-*.tar", conditions=["image"])}
    # batch_size 3: two batches of unequal token counts, so a per-batch or per-caption mean cannot pass
    rows, stub = _evaluate(export_dir, data_root, tmp_path, tasks, monkeypatch, batch_size=3)
    by = {(r["task"], r["metric"], r["condition"]): r["mean"] for r in rows}
    refs = {i: CAPTIONS[i] for i in range(len(CAPTIONS))}
    res = {i: [CAPTIONS[(i + 1) % len(CAPTIONS)][0]] for i in range(len(CAPTIONS))}
    expected = caption_scores(refs, res)
    first_only = caption_scores({i: r[:1] for i, r in refs.items()}, res)
    assert expected["CIDEr"] != pytest.approx(first_only["CIDEr"])  # the data can tell the two apart
    assert by[("multi", "CIDEr", "image")] == pytest.approx(expected["CIDEr"], abs=1e-9)
    assert by[("multi", "BLEU-4", "image")] == pytest.approx(expected["BLEU-4"], abs=1e-9)
    # no_image captioning: the LM alone, no image anywhere
    no_image = [(p, imgs) for p, imgs in stub.calls if "<image>" not in p]
    assert len(no_image) == len(CAPTIONS) and all(imgs == [] for _, imgs in no_image)
    assert by[("multi", "CIDEr", "no_image")] == pytest.approx(
        caption_scores(refs, {i: ["a picture"] for i in refs})["CIDEr"], abs=1e-9)

    # Perplexity: exp(total caption-token CE / total caption tokens), one caption at a time here.
    model = FrozenModel.from_pretrained(str(export_dir)).eval()
    items = load_items(tasks["single"], SampleTextConfig(), data_root=str(data_root), image_size=SIZE, rank=0,
                         world_size=1, limit=None)
    collate = Collator(model.tokenizer, SampleTextConfig().max_length)
    losses, counts = [], []
    with torch.no_grad():
        for item in items:
            batch = collate([item])
            # The sequence is [k=2 prefix tokens, text]; position t predicts token t + 1.
            labels = torch.cat([torch.full((2,), -100), batch["labels"][0]])  # [k + T]
            logits = model(batch["images"], batch["input_ids"], batch["attention_mask"]).logits[0]  # [k + T, V]
            ce = torch.nn.functional.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=-100, reduction="sum")
            losses.append(float(ce))
            counts.append(int((labels[1:] != -100).sum()))
    assert len(set(counts)) > 1  # captions of different lengths: per token != per sequence
    per_token = math.exp(sum(losses) / sum(counts))
    per_sequence = math.exp(sum(loss / c for loss, c in zip(losses, counts)) / len(counts))
    assert per_token != pytest.approx(per_sequence, rel=1e-4)
    assert by[("single", "perplexity", "image")] == pytest.approx(per_token, rel=1e-5)


def test_test_split_writes_official_submission_files_and_no_rows(export_dir, data_root, tmp_path, monkeypatch, capsys):
    task = VqaTaskConfig(shards="vqa/test-*.tar", demo_shards="vqa/val-*.tar", shots=[0, 1], num_trials=1,
                         conditions=["image"])
    rows, _ = _evaluate(export_dir, data_root, tmp_path, {"t": task}, monkeypatch)
    assert rows == []
    for shots in (0, 1):
        answers = json.loads((tmp_path / "submissions" / f"t-shots{shots}-image-trial0.json").read_text())
        assert sorted(a["question_id"] for a in answers) == [900 + i for i in range(len(VQA))]
        assert all(set(a) == {"question_id", "answer"} and isinstance(a["question_id"], int) for a in answers)
        assert {a["question_id"]: a["answer"] for a in answers} == {900 + i: p for i, (_, _, _, p) in enumerate(VQA)}
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["rows"] == [] and "no score rows" in results["notes"][0]
    printed = " ".join("".join(capsys.readouterr()).split())  # the console may wrap long lines
    assert "note: t: no score rows: its 6 questions have no answers" in printed


def test_demonstrations_without_answers_fail_naming_demo_shards(export_dir, data_root, tmp_path, monkeypatch):
    task = VqaTaskConfig(shards="vqa/val-*.tar", demo_shards="vqa/test-*.tar", shots=[0, 1], conditions=["image"])
    with pytest.raises(DataError, match=r"task t: demo_shards=vqa/test-\*.tar holds questions without answers"):
        _evaluate(export_dir, data_root, tmp_path, {"t": task}, monkeypatch)
    unset = VqaTaskConfig(shards="vqa/test-*.tar", shots=[1], conditions=["image"])  # pool = the test split itself
    with pytest.raises(DataError, match="demo_shards \\(unset"):
        _evaluate(export_dir, data_root, tmp_path, {"t": unset}, monkeypatch)


def test_train_blind_export_is_evaluated_with_black_images(tiny_gpt2, data_root, tmp_path, monkeypatch):
    from frozen import FrozenModel

    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=SIZE)
    export = model.save_pretrained(tmp_path / "blind_export", metadata={"trained_blind": True})
    assert json.loads((export / "frozen_config.json").read_text())["trained_blind"] is True
    tasks = {"v": VqaTaskConfig(shards="vqa/val-*.tar", conditions=["image", "no_image"]),
             "c": CaptionTaskConfig(shards="caps/single-*.tar", conditions=["image"])}
    rows, stub = _evaluate(export, data_root, tmp_path / "run", tasks, monkeypatch)
    assert {r["condition"] for r in rows if r["task"] == "v"} == {"black_images", "no_image"}
    assert {(r["metric"], r["condition"]) for r in rows if r["task"] == "c"} == {
        ("BLEU-4", "black_images"), ("CIDEr", "black_images"), ("perplexity", "black_images")}
    # the perplexity of black images is the model's loss on zeros, not on the pictures
    real, _ = _evaluate(export, data_root, tmp_path / "real", {"c": tasks["c"]}, monkeypatch,
                        blind_model_sees_black_images=False)
    assert {r["condition"] for r in real} == {"image"}
    assert [r["mean"] for r in rows if r["metric"] == "perplexity"] != [r["mean"] for r in real
                                                                         if r["metric"] == "perplexity"]
    with_images = [imgs for p, imgs in stub.calls if "<image>" in p]
    assert len(with_images) == len(VQA) + len(CAPTIONS)
    assert all(len(imgs) == 1 and not imgs[0].any() for imgs in with_images)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["trained_blind"] is True


def test_black_images_keep_the_prompt_and_zero_every_image():
    ep_task = BindingTaskConfig(num_episodes=2)
    episodes = load_episodes(ep_task, ways=2, shots=1, repeats=1, seed=0)
    image = list(episode_queries(episodes, induction=True, condition="image"))
    black = list(black_out(episode_queries(episodes, induction=True, condition="black_images"), SIZE))
    none = list(episode_queries(episodes, induction=True, condition="no_image"))
    for a, b, c in zip(image, black, none):
        assert b.prompt == a.prompt and len(b.images) == len(a.images) == 2 * 2 + 1  # support twice + query
        assert all(torch.equal(im, torch.zeros(3, SIZE, SIZE)) for im in b.images)
        # the text-only LM: no support image, no query image, no marker
        assert c.images == [] and "<image>" not in c.prompt and c.prompt == a.prompt.replace("<image>", "")


def test_demonstrations_never_come_from_the_query_image_when_the_pool_is_the_evaluated_set(caption_data):
    items = load_items(VqaTaskConfig(shards="vqa/vqa-train-*.tar"), SampleTextConfig(), data_root=str(caption_data),
                         image_size=SIZE, rank=0, world_size=1, limit=None)
    pool = DemoPool(items)
    image_of = {ex.key: ex.meta["image_id"] for ex in items}
    used = 0
    for trial in range(3):
        for ex, q in zip(items, vqa_queries(items, pool, VqaTaskConfig(), shots=4, condition="image", seed=0,
                                            trial=trial)):
            assert len(q.meta["demo_keys"]) == 4
            assert all(image_of[k] != ex.meta["image_id"] for k in q.meta["demo_keys"]), (ex.key, q.meta["demo_keys"])
            used += 1
    assert used == 3 * len(items)


def test_presets_compose_into_their_kinds_schemas():
    """Every conf/eval preset through Hydra's compose: each task validated into its kind's schema."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from frozen.config import EVAL_TASK_KINDS, register_configs

    register_configs()
    conf = Path(__file__).resolve().parents[2] / "conf"
    presets = sorted(p.stem for p in (conf / "eval").glob("*.yaml"))
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for preset in presets:
            cfg = OmegaConf.to_object(compose(config_name="eval", overrides=[f"eval={preset}"]))
            assert cfg.eval.tasks, preset
            for name, task in cfg.eval.tasks.items():
                assert type(task) is EVAL_TASK_KINDS[task.kind], (preset, name)
        deepmind = OmegaConf.to_object(compose(config_name="eval", overrides=["eval=fewshot_deepmind"])).eval.tasks
        assert deepmind["open_ended_mi"].repeats == [0] and deepmind["open_ended_mi_repeats"].repeats == [1, 3]
        assert deepmind["open_ended_mi"].root == "data/fewshot"  # ${data_root} resolved
        bad = compose(config_name="eval", overrides=["eval=easyvqa", "+eval.tasks.easyvqa_vqa.ways=[2]"])
        with pytest.raises(FrozenConfigError, match="eval task easyvqa_vqa \\(kind=vqa\\): unknown key\\(s\\) ways"):
            OmegaConf.to_object(bad)


@pytest.mark.parametrize("blind", [False, True])
def test_training_records_trained_blind_in_the_export(tmp_path, caption_data, tiny_gpt2, blind):
    from frozen.config import LMConfig, LoggerConfig, ModelConfig, TrainConfig, TrainerConfig
    from frozen.eval.run import trained_blind
    from frozen.train.loop import train

    cfg = TrainConfig(
        model=ModelConfig(vision="tiny_cnn", image_size=SIZE, num_prefix_tokens=2), lm=LMConfig(name=str(tiny_gpt2)),
        data=DataConfig(train_shards="caps/train-*.tar", num_workers=0, shuffle_buffer=0, max_length=16),
        trainer=TrainerConfig(max_steps=2, batch_size=4, val_every=0, ckpt_every=0, num_sample_captions=0,
                              device="cpu", precision="fp32", blind=blind),
        logger=LoggerConfig(backend="none"), data_root=str(caption_data), run_dir=str(tmp_path / "run"))
    export = Path(train(cfg)["export"])
    assert json.loads((export / "frozen_config.json").read_text())["trained_blind"] is blind
    assert trained_blind(export) is blind
