"""Typed configuration schemas. ``frozen/`` receives these dataclasses; Hydra lives at the edges.

YAML files under ``conf/`` extend these schemas (registered by :func:`register_configs`), so a wrong
key or a value of the wrong type fails when Hydra composes the config, before any work starts.
Values that types cannot express are checked once per run by the schemas' ``check`` functions,
gathered by :func:`train_config_problems` / :func:`evaluate_config_problems` (see
:mod:`frozen.config.train`); constructing a schema checks nothing.
Modules: ``checks`` (the shared check helpers), ``train`` (model, LM, data, trainer, logger, run),
``evaluate`` (one schema per eval task kind, the evaluation run). Of this project it may import
only ``frozen.errors``: every other package imports it.
"""

from __future__ import annotations

from omegaconf import MISSING, OmegaConf

from frozen.config.checks import DEVICES, raise_problems
from frozen.config.evaluate import (
    EVAL_CONDITIONS,
    EVAL_TASK_KINDS,
    BindingTaskConfig,
    CaptionTaskConfig,
    DeepMindTaskConfig,
    EpisodeTaskConfig,
    EvalSuiteConfig,
    EvalTaskBase,
    EvalTaskConfig,
    EvaluateConfig,
    VqaTaskConfig,
    eval_task_from_dict,
    evaluate_config_problems,
    validate_evaluate_config,
)
from frozen.config.train import (
    LM_DTYPES,
    MAPPERS,
    PRECISIONS,
    STRATEGIES,
    DataConfig,
    LMConfig,
    LoggerConfig,
    ModelConfig,
    SampleTextConfig,
    TrainConfig,
    TrainerConfig,
    accumulation_steps,
    prefix_in_rows,
    train_config_problems,
    uses_slot_layout,
    validate_train_config,
)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore; YAML in conf/ extends them."""
    from hydra.core.config_store import ConfigStore

    if not OmegaConf.has_resolver("if_null"):  # conf/'s hydra.run.dir follows run_dir when one is given
        OmegaConf.register_new_resolver("if_null", lambda value, default: default if value is None else value)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="lm", name="lm_schema", node=LMConfig)
    cs.store(group="data", name="data_schema", node=DataConfig(train_shards=MISSING))
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(group="eval", name="eval_schema", node=EvalSuiteConfig)


__all__ = [
    "DEVICES", "EVAL_CONDITIONS", "EVAL_TASK_KINDS", "LM_DTYPES", "MAPPERS", "PRECISIONS", "STRATEGIES",
    "BindingTaskConfig", "CaptionTaskConfig", "DataConfig", "DeepMindTaskConfig", "EpisodeTaskConfig",
    "EvalSuiteConfig", "EvalTaskBase", "EvalTaskConfig", "EvaluateConfig", "LMConfig", "LoggerConfig",
    "ModelConfig", "SampleTextConfig", "TrainConfig", "TrainerConfig", "VqaTaskConfig", "accumulation_steps",
    "eval_task_from_dict", "evaluate_config_problems", "raise_problems", "register_configs",
    "prefix_in_rows", "train_config_problems", "uses_slot_layout", "validate_evaluate_config", "validate_train_config",
]
