"""lmms-eval: the offline easy-VQA task's data and functions, the model side of its requests, and (where
lmms-eval is installed: .venv-lmms, `make lmms-eval`) its own command line on a tiny export."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from frozen.config import EvalSuiteConfig, EvaluateConfig, SampleTextConfig, VqaTaskConfig
from frozen.data.pipeline import iter_eval_samples
from frozen.data.samples import decode_image
from frozen.errors import InputError
from frozen.eval.lmms import (
    CHOICES,
    continuation_ids,
    doc_to_choice,
    doc_to_text,
    doc_to_visual,
    generation_options,
    interleave,
    loglikelihood,
    loglikelihoods,
    process_results,
    write_easyvqa_dataset,
)
from frozen.eval.metrics import vqa_accuracy
from frozen.model.embedding import embed_tokenized

REPO = Path(__file__).resolve().parents[2]
HAS_LMMS_EVAL = importlib.util.find_spec("lmms_eval") is not None


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_gpt2):
    from frozen import FrozenModel

    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=32)
    return model.save_pretrained(tmp_path_factory.mktemp("export") / "export")


@pytest.fixture(scope="module")
def docs(caption_data, tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("lmms") / "data" / "lmms_easyvqa" / "test.jsonl"
    n = write_easyvqa_dataset(out, data_root=str(caption_data), shards="vqa/vqa-test-*.tar")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert n == len(lines) == 24
    return out, lines


def test_dataset_holds_the_harness_questions_in_its_order_with_the_same_pixels(docs, caption_data, tiny_model):
    _, lines = docs
    examples = list(iter_eval_samples("vqa/vqa-test-*.tar", data_root=str(caption_data), image_size=32,
                                      text=SampleTextConfig()))
    assert [d["question"] for d in lines] == [e.meta["question"] for e in examples]
    assert [d["id"] for d in lines] == [str(e.meta["question_id"]) for e in examples]
    assert [d["answers"] for d in lines] == [e.meta["answers"] for e in examples]
    for d, e in zip(lines, examples):
        (image,) = doc_to_visual(d)
        assert torch.equal(tiny_model.preprocess(image), e.image)
    assert doc_to_text(lines[0]) == "Q: what color is the shape? A:"  # VqaTaskConfig.prompt, the harness's
    assert doc_to_choice(lines[0]) == list(CHOICES) and len(CHOICES) == 13


def test_dataset_needs_answers(tmp_path):
    import webdataset as wds

    shard = tmp_path / "vqa" / "vqa-test-000000.tar"
    shard.parent.mkdir()
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSu"
                           "QmCC")
    decode_image(png)
    with wds.TarWriter(str(shard)) as sink:
        sink.write({"__key__": "q0", "png": png, "json": json.dumps({"question": "what?", "question_id": 1}).encode()})
    with pytest.raises(Exception, match="q0 in .* has no answers; the lmms-eval task needs an answered split"):
        write_easyvqa_dataset(tmp_path / "out.jsonl", data_root=str(tmp_path), shards="vqa/*.tar")


def test_process_results_is_the_harness_vqa_accuracy():
    doc = {"answers": ["red"] * 10}
    assert process_results(doc, ["red"]) == {"vqa_accuracy": 1.0}
    assert process_results(doc, ["  red "]) == {"vqa_accuracy": vqa_accuracy("red", doc["answers"])}
    mixed = {"answers": ["two"] * 3 + ["2"] * 7}
    assert process_results(mixed, ["Two."]) == {"vqa_accuracy": vqa_accuracy("Two.", mixed["answers"])} == \
        {"vqa_accuracy": 1.0}


def test_interleave_puts_images_first_or_where_the_context_marks_them():
    a, b = torch.zeros(3, 32, 32), torch.ones(3, 32, 32)
    p = interleave("Q: what? A:", [a])
    assert p.texts == ("", "Q: what? A:") and p.images[0] is a
    p = interleave("x <image> y <image> z", [a, b])
    assert p.texts == ("x ", " y ", " z") and p.images[1] is b
    assert interleave("text only", None).texts == ("text only",)
    with pytest.raises(InputError, match="the context has 1 <image> marker\\(s\\) for 2 image\\(s\\)"):
        interleave("<image> two?", [a, b])
    with pytest.raises(InputError, match="the frozen model takes images only, got a str visual"):
        interleave("video", ["clip.mp4"])


def test_generation_options_from_a_tasks_generation_kwargs():
    o = generation_options({"until": ["\n", "Q:"], "max_new_tokens": 4, "temperature": 0}, max_new_tokens=32,
                           batch_size=8)
    assert (o.stop_strings, o.max_new_tokens, o.num_beams, o.batch_size) == (("\n", "Q:"), 4, 1, 8)
    o = generation_options({"until": "\n"}, max_new_tokens=32, batch_size=None)
    assert (o.stop_strings, o.max_new_tokens) == (("\n",), 32)
    assert generation_options(None, max_new_tokens=5, batch_size=1).stop_strings == ()


def test_loglikelihood_is_the_summed_caption_loss_of_the_continuation(tiny_model):
    """Against FrozenModel.forward (the training loss path): one image first, then context + continuation."""
    model, tok = tiny_model.eval(), tiny_model.tokenizer
    image = torch.rand(3, 32, 32)
    context, continuation = "Q: what color is it? A:", " red"
    ll, _ = loglikelihood(model, interleave(context, [image]), continuation)
    ctx_ids = tok(context, add_special_tokens=False).input_ids
    whole = tok(context + continuation, add_special_tokens=False).input_ids
    labels = torch.tensor([[-100] * len(ctx_ids) + whole[len(ctx_ids):]])
    with torch.no_grad():
        loss = model(image[None], torch.tensor([whole]), labels=labels).loss.item()
    n = len(whole) - len(ctx_ids)
    assert n >= 1 and ll == pytest.approx(-loss * n, rel=1e-5, abs=1e-5)
    # lm-eval's convention: a context's trailing spaces belong to the continuation
    assert loglikelihood(model, interleave(context + " ", [image]), "red")[0] == pytest.approx(ll, abs=1e-6)


def test_loglikelihood_says_whether_greedy_decoding_gives_the_continuation(tiny_model):
    model, tok = tiny_model.eval(), tiny_model.tokenizer
    prompt = interleave("Q: what? A:", [torch.rand(3, 32, 32)])
    with torch.no_grad():
        embeds = embed_tokenized(model, [prompt.tokenize(tok)])[0]
        ranked = model.lm(inputs_embeds=embeds[None]).logits[0, -1].argsort(descending=True).tolist()
    # tokens whose text tokenises back to that one token after the context, best first
    single = [i for i in ranked[:50] if continuation_ids(model, prompt, tok.decode([i]))[2] == [i]][:2]
    assert len(single) == 2
    for i in single:
        assert loglikelihood(model, prompt, tok.decode([i]))[1] is (i == ranked[0])


def test_batched_loglikelihoods_equal_one_at_a_time(tiny_model):
    """Right padding: a request scores the same in a batch of requests of other lengths and image counts."""
    model = tiny_model.eval()
    a, b = torch.rand(3, 32, 32), torch.rand(3, 32, 32)
    requests = [(interleave("Q: what color is the big shape on the left? A:", [a]), " red"),
                (interleave("<image>x<image>Q: and? A:", [a, b]), " a blue circle"),
                (interleave("no image here", []), " yes"),
                (interleave("", [b]), " green")]
    alone = [loglikelihood(model, ctx, cont) for ctx, cont in requests]
    for batch_size in (2, 4):
        batched = loglikelihoods(model, requests, batch_size)
        assert [g for _, g in batched] == [g for _, g in alone]
        assert [ll for ll, _ in batched] == pytest.approx([ll for ll, _ in alone], abs=1e-4)


def test_empty_context_conditions_on_bos(tiny_model):
    ll, _ = loglikelihood(tiny_model.eval(), interleave("", []), " red")
    assert ll < 0
    with pytest.raises(InputError, match="adds no token"):
        loglikelihood(tiny_model, interleave("x", []), "")


def harness_vqa(export, data_root, run_dir, limit):
    """evaluate.py's easy-VQA numbers: 0 shots, image condition, the first `limit` questions."""
    from frozen.eval.run import evaluate

    task = VqaTaskConfig(shards="vqa/vqa-test-*.tar", shots=[0], conditions=["image"], max_new_tokens=4)
    cfg = EvaluateConfig(eval=EvalSuiteConfig(name="t", tasks={"vqa": task}), load_path=str(export),
                         data_root=str(data_root), run_dir=str(run_dir), batch_size=4, device="cpu",
                         max_examples=limit)
    (row,) = [r for r in evaluate(cfg) if r["metric"] == "vqa_accuracy"]
    preds = [json.loads(line) for line in (Path(run_dir) / "predictions.jsonl").read_text().splitlines()]
    return row["mean"], {p["id"]: p["prediction"] for p in preds}


def test_the_lmms_requests_answer_as_the_harness_does(export_dir, caption_data, docs, tmp_path):
    """The wrapper's generation path (interleave + the task's generation_kwargs) gives evaluate.py's answers."""
    from frozen import FrozenModel

    _, lines = docs
    mean, preds = harness_vqa(export_dir, caption_data, tmp_path, 10)
    model = FrozenModel.from_pretrained(str(export_dir)).eval()
    options = generation_options({"until": ["\n"], "max_new_tokens": 4}, max_new_tokens=32, batch_size=3)
    answers = model.generate(None, [interleave(doc_to_text(d), doc_to_visual(d)) for d in lines[:10]], options)
    assert {d["id"]: a for d, a in zip(lines, answers)} == preds
    scores = [process_results(d, [a])["vqa_accuracy"] for d, a in zip(lines, answers)]
    assert sum(scores) / len(scores) == pytest.approx(mean, abs=1e-12)


@pytest.mark.skipif(not HAS_LMMS_EVAL, reason="lmms-eval is not installed here (make lmms-eval installs .venv-lmms)")
def test_lmms_eval_command_line_runs_the_offline_tasks(export_dir, caption_data, docs, tmp_path):
    """`python -m lmms_eval --model frozen` (entry-point registration), offline: its score is the harness's."""
    from frozen import FrozenModel

    data_file, lines = docs
    work = data_file.parents[2]  # the task reads data/lmms_easyvqa/test.jsonl relative to the working directory
    cache = str(tmp_path / "hf_datasets")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "HF_DATASETS_CACHE": cache, "LMMS_EVAL_DATASETS_CACHE": cache}
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "frozen", "--model_args", f"pretrained={export_dir}",
           "--tasks", "frozen_easyvqa,frozen_easyvqa_mc", "--include_path", str(REPO / "lmms_tasks"),
           "--limit", "10", "--batch_size", "4", "--device", "cpu", "--output_path", str(tmp_path / "out"),
           "--log_samples"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (results_file,) = list((tmp_path / "out").rglob("*_results.json"))
    results = json.loads(results_file.read_text())["results"]
    mean, _ = harness_vqa(export_dir, caption_data, tmp_path / "harness", 10)
    assert results["frozen_easyvqa"]["vqa_accuracy,none"] == pytest.approx(mean, abs=1e-12)
    # multiple choice: the choice of largest log-likelihood (lmms-eval's argmin over the model's -log p)
    model = FrozenModel.from_pretrained(str(export_dir)).eval()
    (samples_file,) = list((tmp_path / "out").rglob("*_samples_frozen_easyvqa_mc.jsonl"))
    samples = {s["doc_id"]: s for s in map(json.loads, samples_file.read_text().splitlines())}
    correct = []
    for doc_id, doc in enumerate(lines[:10]):
        lls = loglikelihoods(model, [(interleave(doc_to_text(doc), doc_to_visual(doc)), " " + c) for c in CHOICES], 13)
        assert [float(v) for v, _ in samples[doc_id]["filtered_resps"]] == pytest.approx([-ll for ll, _ in lls],
                                                                                         abs=1e-4)
        correct.append(float(max(range(len(CHOICES)), key=lambda i: lls[i][0]) == doc["answer_index"]))
    assert results["frozen_easyvqa_mc"]["acc,none"] == pytest.approx(sum(correct) / len(correct), abs=1e-12)


def test_make_lmms_eval_plans_the_offline_run_in_its_own_environment(tmp_path):
    plan = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "-W", "pyproject.toml", "lmms-eval",
                           "LOAD_PATH=exp", "LIMIT=20",
                           f"DATA_ROOT={tmp_path}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert ".venv-lmms/bin/python -m pip install -q lmms-eval==0.7.3 filelock==3.32.7" in plan
    assert 'if not d.startswith("wandb")' in plan
    # layered on .venv (a .pth adds its site-packages), not a second copy of torch and frozen
    assert "site.addsitedir" in plan and "_frozen_base_venv.pth" in plan and "--no-deps -e ." not in plan
    assert f"scripts/lmms_easyvqa.py --data-root {tmp_path} --out data/lmms_easyvqa/test.jsonl" in plan
    run = " ".join(plan.split("-m lmms_eval", 1)[1].split())
    assert "HF_DATASETS_OFFLINE=1" in plan.split("-m lmms_eval", 1)[0]
    for part in ("--model frozen", "--tasks frozen_easyvqa ", "--include_path lmms_tasks",
                 "--output_path outputs/lmms_eval", "--log_samples", "--limit 20", "-name '*_results.json'"):
        assert part in run, part
    assert "--limit" not in subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "-o", ".venv-lmms/.installed",
                                            "lmms-eval", "LOAD_PATH=exp", f"DATA_ROOT={tmp_path}"], cwd=REPO,
                                           capture_output=True, text=True, check=True).stdout


def test_the_entry_point_names_the_manifest():
    import ast
    import tomllib

    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["lmms_eval.models"]
    assert eps == {"frozen": "frozen.eval.lmms_model:manifest"}
    tree = ast.parse((REPO / "frozen" / "eval" / "lmms_model.py").read_text())
    assert {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} >= {"manifest", "FrozenLMMS"}


def test_data_script_reports_missing_shards_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/lmms_easyvqa.py", "--data-root", str(tmp_path), "--out",
                           str(tmp_path / "out.jsonl")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "easyvqa/vqa-test-*.tar" in proc.stderr and "Traceback" not in proc.stderr
