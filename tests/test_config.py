"""The configuration: real presets composed through Hydra, value checks, and a snapshot of the surface.

Refresh the snapshot after a deliberate rename or new key:
``FROZEN_UPDATE_SNAPSHOT=1 .venv/bin/python -m pytest -q tests/test_config.py -k snapshot`` and commit
``tests/config_surface.yaml`` with the change.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from frozen.config import (
    PRECISIONS,
    DataConfig,
    EvaluateConfig,
    LMConfig,
    LoggerConfig,
    ModelConfig,
    TrainConfig,
    TrainerConfig,
    evaluate_config_problems,
    register_configs,
    train_config_problems,
    validate_train_config,
)
from frozen.errors import FrozenConfigError
from frozen.model import lm

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SNAPSHOT = Path(__file__).parent / "config_surface.yaml"

register_configs()


def presets(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def compose_eval(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


# ------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("experiment", presets("experiment"))
def test_every_experiment_preset_composes_and_validates(experiment):
    cfg = compose_train(f"experiment={experiment}")
    assert train_config_problems(cfg) == []
    typed = OmegaConf.to_object(cfg)
    assert isinstance(typed, TrainConfig) and isinstance(typed.data, DataConfig)
    validate_train_config(typed)


@pytest.mark.parametrize("group", ["model", "lm", "data", "trainer", "logger"])
def test_every_group_option_composes(group):
    for option in presets(group):
        cfg = compose_train(f"{group}={option}")
        assert train_config_problems(cfg) == [], (group, option)


@pytest.mark.parametrize("preset", presets("eval"))
def test_every_eval_preset_composes(preset):
    cfg = compose_eval(f"eval={preset}", "load_path=x")
    assert evaluate_config_problems(cfg) == []
    assert len(cfg.eval.tasks) >= 1


# ------------------------------------------------------------------------------------------ data_root
def test_data_root_is_one_top_level_value():
    default = compose_train()
    assert default.data_root == "data" and "data_root" not in default.data
    moved = OmegaConf.to_object(compose_train("data=easyvqa", "data_root=/somewhere/else"))
    assert moved.data_root == "/somewhere/else" and not hasattr(moved.data, "data_root")
    assert OmegaConf.to_yaml(compose_train()).count("data_root:") == 1


def test_a_second_data_root_under_data_is_refused():
    with pytest.raises(ConfigCompositionException, match="data_root"):
        compose_train("data.data_root=/elsewhere")


# ------------------------------------------------------------------------------------------ checks
def test_all_bad_values_are_reported_together_with_full_keys():
    cfg = compose_train("model.num_prefix_tokens=0", "trainer.lr=-1", "model.image_size=2", "data.max_length=1",
                        "trainer.precision=fp8", "logger.mode=loud")
    assert train_config_problems(cfg) == [
        "model.num_prefix_tokens must be >= 1, got 0; the paper uses 2",
        "model.image_size must be >= 8 pixels, got 2; the paper uses 224",
        "trainer.lr must be > 0, got -1.0; the paper uses 3e-4",
        "trainer.precision must be auto, bf16, fp16 or fp32, got 'fp8'",
        "logger.mode must be auto, online, offline or disabled, got 'loud'",
        "data.max_length must be >= 2 (one text token + EOS), got 1",
    ]


def test_schema_checks_report_every_problem():
    assert ModelConfig.check(ModelConfig(num_prefix_tokens=0, image_size=4, mapper="conv")) == [
        "num_prefix_tokens must be >= 1, got 0; the paper uses 2",
        "image_size must be >= 8 pixels, got 4; the paper uses 224",
        "mapper must be linear or mlp, got 'conv'",
    ]
    assert DataConfig.check(DataConfig(train_shards="x", max_length=1)) == [
        "max_length must be >= 2 (one text token + EOS), got 1"
    ]
    for precision in PRECISIONS:
        assert TrainerConfig.check(TrainerConfig(precision=precision)) == []
    assert TrainerConfig.check(TrainerConfig(precision="fp8")) == [
        "precision must be auto, bf16, fp16 or fp32, got 'fp8'"
    ]
    bad = TrainConfig(model=ModelConfig(num_prefix_tokens=0), data=DataConfig(train_shards="x", max_length=1))
    with pytest.raises(FrozenConfigError) as err:
        validate_train_config(bad)
    assert str(err.value).splitlines() == [
        "model.num_prefix_tokens must be >= 1, got 0; the paper uses 2",
        "data.max_length must be >= 2 (one text token + EOS), got 1",
    ]


SCHEMAS = (ModelConfig, LMConfig, TrainerConfig, LoggerConfig, DataConfig)


def count_checks(monkeypatch) -> list[str]:
    """Names of the schemas whose ``check`` ran, one entry per call."""
    calls: list[str] = []
    for schema in SCHEMAS:
        def counted(c, real=schema.check, name=schema.__name__):
            calls.append(name)
            return real(c)

        monkeypatch.setattr(schema, "check", staticmethod(counted))
    return calls


def test_each_value_is_checked_once_per_run(tiny_gpt2, caption_data, tmp_path, monkeypatch):
    """train.py's order (preflight, typed config, train) and the library's (typed config, train)
    each run every schema's check exactly once; building the typed config runs none."""
    from frozen.preflight import check_train
    from frozen.train.loop import train

    once = sorted(schema.__name__ for schema in SCHEMAS)
    overrides = ["experiment=debug", f"lm.name={tiny_gpt2}", f"data_root={caption_data}", "trainer.max_steps=1",
                 "data.train_shards=caps/train-*.tar", "data.val_shards=null", "trainer.ckpt_every=0"]
    calls = count_checks(monkeypatch)
    typed = OmegaConf.to_object(compose_train(*overrides, f"run_dir={tmp_path / 'library'}"))
    assert calls == []
    train(typed)
    assert sorted(calls) == once
    calls.clear()
    composed = compose_train(*overrides, f"run_dir={tmp_path / 'cli'}")
    check_train(composed)
    train(OmegaConf.to_object(composed), checked=True)
    assert sorted(calls) == once


def test_evaluate_checks_a_config_built_in_python_before_loading():
    from frozen.eval.run import evaluate

    with pytest.raises(FrozenConfigError) as err:
        evaluate(EvaluateConfig(load_path="no/such/export", batch_size=0, precision="fp16"))
    assert str(err.value).splitlines() == [
        "batch_size must be >= 1, got 0", "precision must be fp32 or bf16, got 'fp16'"
    ]


def test_fsdp_settings_are_checked_with_the_other_values():
    cfg = compose_train("trainer.strategy=zero3", "lm.trainable=true")
    assert train_config_problems(cfg) == ["trainer.strategy must be ddp or fsdp, got 'zero3'"]
    cfg = compose_train("trainer.strategy=fsdp", "lm.trainable=true", "trainer.fsdp_cpu_offload=true",
                        "trainer.device=cpu")
    assert train_config_problems(cfg) == [
        "trainer.fsdp_cpu_offload=true offloads GPU shards to the host; with trainer.device=cpu they are in host "
        "memory already: set it to false",
        "trainer.strategy=fsdp shards a frozen LM; the lm.trainable / lm.from_scratch ablations train the LM "
        "itself: use trainer.strategy=ddp for them",
    ]


@pytest.mark.parametrize("betas, ok", [
    ("[0.9,0.95]", True), ("[0.0,0.999]", True),
    ("[0.9,1.0]", False),  # AdamW's bias correction divides by 1 - beta2**t = 0: NaN from the first step
    ("[1.0,0.95]", False), ("[-0.1,0.95]", False), ("[0.9,1.5]", False), ("[0.9]", False), ("[0.9,0.95,0.99]", False),
])
def test_adam_betas_must_be_two_numbers_below_one(betas, ok):
    cfg = compose_train("experiment=debug", f"trainer.betas={betas}")
    given = [float(b) for b in betas.strip("[]").split(",")]
    assert train_config_problems(cfg) == ([] if ok else [f"trainer.betas must be two numbers in [0, 1), got {given}"])


def test_batch_split_is_checked_only_once_the_numbers_are_sane():
    # The debug trainer's global batch is 8: a micro-batch of 3 on one process cannot make it up.
    cfg = compose_train("experiment=debug", "per_gpu_batchsize=3")
    assert train_config_problems(cfg) == [
        "trainer.batch_size=8 must be a multiple of per_gpu_batchsize (3) x processes (1); change one of them"
    ]
    # With another bad value the split is not judged (its message would rest on a wrong number).
    cfg = compose_train("experiment=debug", "per_gpu_batchsize=3", "trainer.lr=0")
    assert train_config_problems(cfg) == ["trainer.lr must be > 0, got 0.0; the paper uses 3e-4"]
    cfg = compose_train("experiment=debug", "per_gpu_batchsize=4", "num_gpus=2")
    assert train_config_problems(cfg) == []
    typed = dataclasses.replace(OmegaConf.to_object(cfg), per_gpu_batchsize=3)
    with pytest.raises(FrozenConfigError, match="multiple of per_gpu_batchsize"):
        validate_train_config(typed)


def test_a_train_config_without_data_is_reported():
    assert train_config_problems(TrainConfig()) == [
        "no data config: pick one with data=easyvqa (or coco, cc3m, vqav2, custom)"
    ]


# ------------------------------------------------------------------------------------------ LM presets
def test_known_lms_are_the_names_in_conf_lm(tmp_path, monkeypatch):
    names = {yaml.safe_load((CONF / "lm" / f"{p}.yaml").read_text())["name"] for p in presets("lm")}
    literal = {n for n in names if "${" not in n}
    assert set(lm.known_lms()) == literal and "gpt2" in literal and "smollm2-135m-instruct-gguf" in literal
    # adding a YAML is enough
    (tmp_path / "new.yaml").write_text("defaults:\n  - lm_schema\n\nname: someone/new-lm  # a comment\n")
    monkeypatch.setattr(lm, "PRESETS_DIR", tmp_path)
    lm.known_lms.cache_clear()
    try:
        assert lm.known_lms() == ("someone/new-lm",)
    finally:
        lm.known_lms.cache_clear()


@pytest.mark.parametrize(
    "name, path_like",
    [("outputs/tiny_lm", True), ("./x", True), ("/abs/lm", True), ("~/lm", True), ("a/b/c", True),
     ("gpt2", False), ("facebook/opt-1.3b", False), ("HuggingFaceTB/SmolLM2-135M", False)],
)
def test_path_like_lm_names(name, path_like):
    assert lm.looks_like_path(name) is path_like


def test_lm_problem_names_a_missing_folder_not_a_hub_id(tmp_path, monkeypatch, tiny_gpt2):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.chdir(tmp_path)
    problem = lm.lm_problem("outputs/no_such_lm")
    assert problem.startswith("LM folder 'outputs/no_such_lm' does not exist") and "cache" not in problem
    assert "not in the local Hugging Face cache" in lm.lm_problem("someone/not-cached")
    (tmp_path / "empty").mkdir()
    assert "holds no config.json" in lm.lm_problem(str(tmp_path / "empty"))
    assert lm.lm_problem(str(tiny_gpt2)) is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert lm.lm_problem("someone/not-cached") is None  # online: the hub decides when loading


# ------------------------------------------------------------------------------------------ snapshot
def _surface() -> dict:
    """Every key and default of ``train.yaml`` and ``eval.yaml`` as composed with their defaults."""
    return {
        "train": OmegaConf.to_container(compose_train(), resolve=False),
        "evaluate": OmegaConf.to_container(compose_eval(), resolve=False),
    }


def test_config_surface_snapshot():
    surface = _surface()
    if os.environ.get("FROZEN_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(
            "# Every key and default of `python train.py` / `python evaluate.py` (composed defaults).\n"
            "# Refresh after a deliberate change: FROZEN_UPDATE_SNAPSHOT=1 pytest tests/test_config.py -k snapshot\n"
            + yaml.safe_dump(surface, sort_keys=True)
        )
    assert SNAPSHOT.is_file(), "no snapshot yet: run with FROZEN_UPDATE_SNAPSHOT=1 once and commit it"
    committed = yaml.safe_load(SNAPSHOT.read_text())
    assert surface == committed, (
        "the config surface changed (a key renamed, added or a default changed); if deliberate, refresh with "
        "FROZEN_UPDATE_SNAPSHOT=1 .venv/bin/python -m pytest tests/test_config.py -k snapshot and commit it"
    )
