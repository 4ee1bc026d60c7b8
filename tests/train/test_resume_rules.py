"""The resume rules key by key (frozen.train.resume): every config key is either refused on resume (it changes
the model or the batches an uninterrupted run would have seen) or listed and recorded, and each is tested here.
The checks run on a checkpoint's state without training (the end-to-end resume is in test_resume_changes.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from trainkit import make_cfg

from frozen.core.dist import DistInfo
from frozen.errors import FrozenConfigError
from frozen.train.resume import RESUME_CHANGES, _check_compatible, _flat

# key -> a value other than make_cfg's; a resume with it is refused (model, LM, or the training batches change).
REFUSED = {
    "model.vision": "resnet18", "model.vision_pretrained": True, "model.num_prefix_tokens": 3, "model.mapper": "mlp",
    "model.mapper_hidden_dim": 16, "model.image_size": 64,
    "lm.name": "other-lm", "lm.dtype": "bfloat16", "lm.trainable": True, "lm.from_scratch": True,
    "data.train_shards": "caps/other-*.tar", "data_root": "/elsewhere", "data.shuffle_buffer": 4,
    "data.num_workers": 2, "data.per_image_caption": "first", "data.max_length": 12,
    "data.caption_template": " A photo of {caption}", "data.vqa_prompt": " Question: {question} Answer:",
    "data.vqa_target": " {answer}.", "data.jpeg_draft": False, "data.packing": True,
    "data.interleave": True, "data.interleave_separator": "\n", "data.lead_text": "Picture:",
    "data.text_before_image": 0.5,
    "trainer.batch_size": 4, "trainer.blind": True,
    "per_gpu_batchsize": 4, "num_gpus": 2, "num_nodes": 2, "seed": 1,
}
# key -> another value; a resume with it goes ahead, listed in the log and in resume_changes.jsonl.
LOGGED = {
    "data.val_shards": "caps/other-val-*.tar", "data.prefetch_factor": 4,
    "trainer.max_steps": 9, "trainer.lr": 5e-3, "trainer.betas": [0.8, 0.9], "trainer.weight_decay": 0.1,
    "trainer.eps": 1e-6, "trainer.schedule": "cosine", "trainer.warmup_steps": 2, "trainer.min_lr_ratio": 0.5,
    "trainer.grad_clip": 0.5, "trainer.precision": "bf16", "trainer.device": "auto", "trainer.compile": True,
    "trainer.activation_checkpointing": True, "trainer.log_every": 5, "trainer.val_every": 3,
    "trainer.val_batches": 1, "trainer.num_sample_captions": 0, "trainer.ckpt_every": 2, "trainer.keep_last": 2,
    "trainer.max_nonfinite": 3, "trainer.threads": 1, "trainer.peak_tflops": 100.0, "trainer.strategy": "fsdp",
    "trainer.fsdp_cpu_offload": True, "trainer.preempt_signals": ["SIGTERM"], "trainer.dist_timeout_s": 60.0,
    "trainer.preempt_check_every": 5,
    "trainer.fused_optimizer": True,  # the checkpoint's optimizer state (its param groups' `fused`) wins on resume
    "logger.backend": "wandb", "logger.project": "p", "logger.entity": "e", "logger.name": "n",
    "logger.tags": ["t"], "logger.mode": "offline",
    "init_from": "/some/export", "name": "renamed",
}
WHERE = {"run_dir", "load_path"}  # where the run is, not how it trains: neither refused nor recorded


def _changed(cfg, key: str, value):
    """``cfg`` with the dotted ``key`` set to ``value``."""
    head, _, rest = key.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: dataclasses.replace(getattr(cfg, head), **{rest: value})})


def _state(cfg, world_size: int = 1) -> dict:
    """What a checkpoint of ``cfg`` holds that the rules read: its config, step and one RNG state per rank."""
    return {"config": dataclasses.asdict(cfg), "step": 2, "rng": [{}] * world_size}


@pytest.fixture
def cfg(tmp_path):
    return make_cfg(tmp_path / "run", tmp_path / "data", tmp_path / "lm")


def test_every_config_key_has_a_tested_resume_rule(cfg):
    keys = set(_flat(dataclasses.asdict(cfg)))
    assert keys - WHERE == REFUSED.keys() | LOGGED.keys(), "classify the new key in frozen/train/resume.py and here"
    assert not REFUSED.keys() & LOGGED.keys()


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_a_key_that_breaks_exact_resume_is_refused(cfg, key):
    now = _changed(cfg, key, REFUSED[key])
    old = _flat(dataclasses.asdict(cfg))[key]
    with pytest.raises(FrozenConfigError) as info:
        _check_compatible(_state(cfg), now, DistInfo(), Path("step_00000002.pt"), log=print)
    assert str(info.value).startswith("cannot resume from step_00000002.pt: 1 setting(s) ")
    assert f"(saved -> now): {key} {old!r} -> {REFUSED[key]!r}; resume with the saved values" in str(info.value)
    assert not (Path(cfg.run_dir) / RESUME_CHANGES).exists()


@pytest.mark.parametrize("key", sorted(LOGGED))
def test_a_key_that_keeps_resume_exact_is_logged_and_recorded(cfg, key):
    lines = []
    _check_compatible(_state(cfg), _changed(cfg, key, LOGGED[key]), DistInfo(), Path("ckpt.pt"), log=lines.append)
    old = _flat(dataclasses.asdict(cfg))[key]
    assert len(lines) == 1 and f"with changed settings: {key} {old!r} -> {LOGGED[key]!r}" in lines[0]
    records = (Path(cfg.run_dir) / RESUME_CHANGES).read_text().splitlines()
    assert [json.loads(r)["changes"] for r in records] == [{key: [old, LOGGED[key]]}]


def test_another_world_size_is_refused(cfg):
    with pytest.raises(FrozenConfigError, match=r"\(saved -> now\): world size 2 -> 1; resume with"):
        _check_compatible(_state(cfg, world_size=2), cfg, DistInfo(), Path("ckpt.pt"), log=print)


def test_every_resume_with_changes_keeps_its_own_record(cfg):
    """Two resumes with changes: two lines, the first one kept (the file is appended to, never rewritten)."""
    first = _changed(cfg, "trainer.lr", 5e-3)
    _check_compatible(_state(cfg), first, DistInfo(), Path("a.pt"), log=lambda line: None)
    second_state = {**_state(first), "step": 4}
    _check_compatible(second_state, _changed(first, "trainer.max_steps", 9), DistInfo(), Path("b.pt"),
                      log=lambda line: None)
    _check_compatible(second_state, first, DistInfo(), Path("b.pt"), log=lambda line: None)  # no change: no line
    records = [json.loads(r) for r in (Path(cfg.run_dir) / RESUME_CHANGES).read_text().splitlines()]
    assert records == [
        {"step": 2, "checkpoint": "a.pt", "changes": {"trainer.lr": [0.01, 0.005]}},
        {"step": 4, "checkpoint": "b.pt", "changes": {"trainer.max_steps": [6, 9]}},
    ]


@pytest.mark.parametrize("section, key, value", [
    ("lm", "name", "another-lm-of-the-same-width"), ("lm", "dtype", "bfloat16"), ("lm", "trainable", True),
    ("model", "num_prefix_tokens", 3),
])
def test_init_from_an_export_of_another_lm_or_model_is_refused(cfg, tmp_path, section, key, value):
    """Fine-tuning starts from an export's vision + mapper weights: they only fit the LM (its embedding space,
    its dtype) and the model settings they were trained with."""
    from frozen.model.export import export_config, write_export
    from frozen.train.resume import start_point

    write_export(tmp_path / "export", {}, export_config(cfg.model, cfg.lm))
    now = _changed(dataclasses.replace(cfg, init_from=str(tmp_path / "export")), f"{section}.{key}", value)
    old = getattr(getattr(cfg, section), key)
    with pytest.raises(FrozenConfigError, match=rf"export was trained with a different {section} config "
                       rf"\{{'{key}': \({old!r}, {value!r}\)\}} \(saved, now\); start from it with the same settings"):
        start_point(now, DistInfo(), None, None, None)
