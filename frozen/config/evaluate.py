"""Schemas of an evaluation run (``python evaluate.py``): the entry point's settings and the task kinds.

:func:`evaluate_config_problems` checks the entry point's values: preflight reports them, and
:func:`validate_evaluate_config` raises them for a config handed straight to the library. A preset
holds named tasks of four kinds, each with its own schema. Hydra 1.3 has no tagged unions, so
``EvalSuiteConfig.tasks`` is a ``dict[str, Any]`` at composition time and each entry is validated
into the schema its ``kind`` names by :func:`eval_task_from_dict` (called from
``EvalSuiteConfig.__post_init__``, i.e. by ``OmegaConf.to_object``): an unknown key or a wrong type
is one line naming the task, the key and the fields that kind accepts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from frozen.config.checks import DEVICES, failed, one_of, prefixed, raise_problems
from frozen.config.train import LoggerConfig
from frozen.errors import FrozenConfigError

EVAL_CONDITIONS: tuple[str, ...] = ("image", "no_image", "black_images", "text_demos", "text_first")
"""``image``: every image; ``no_image``: text only, no image or marker anywhere (the bare LM);
``black_images``: every image replaced by zeros, its prefix tokens kept (how the paper evaluates
its train-blind model); ``text_demos``: demonstrations without their images, the query with its own;
``text_first``: the position check, VQA tasks at 0 shots only: one fixed neutral line of text, then the
query's image (``frozen.eval.position``)."""


@dataclass
class EvalTaskBase:
    """Fields every kind has."""

    kind: str = ""
    conditions: list[str] = field(default_factory=lambda: ["image", "no_image"])  # see EVAL_CONDITIONS
    max_examples: int | None = None  # cap on evaluated items / episodes (the first N)
    max_new_tokens: int = 10
    min_new_tokens: int = 0  # >0: EOS cannot end an answer earlier (an instruct LM may emit EOS at once)
    max_answer_words: int | None = None  # keep only the first N words of an answer (None: all, cut at newline)

    def __post_init__(self) -> None:
        for c in self.conditions:
            if c not in EVAL_CONDITIONS:
                raise FrozenConfigError(f"unknown condition {c!r}; use {', '.join(EVAL_CONDITIONS)}")
        if "text_first" in self.conditions and self.kind != "vqa":  # its line is a VQA instruction
            raise FrozenConfigError(f"condition text_first is the 0-shot VQA position check; remove it from this "
                                    f"{self.kind or 'non-vqa'} task's conditions (a vqa task takes it)")
        if "text_first" in self.conditions and 0 not in getattr(self, "shots", [0]):
            raise FrozenConfigError(f"condition text_first runs at 0 shots only, and shots={self.shots}; add 0 to "
                                    "shots or remove text_first from conditions")


@dataclass
class CaptionTaskConfig(EvalTaskBase):
    """Captioning (BLEU-4, CIDEr against every reference; perplexity under the image condition)."""

    kind: str = "caption"
    shards: str | None = None  # shard pattern relative to data_root
    caption_prompt: str = ""  # text after the image


@dataclass
class VqaTaskConfig(EvalTaskBase):
    """Open-ended VQA at 0..N demonstrations, official VQA accuracy; a split without answers writes
    the official server's predictions file instead of scores."""

    kind: str = "vqa"
    shards: str | None = None  # shard pattern relative to data_root
    demo_shards: str | None = None  # pool of demonstrations (default: the evaluated split itself)
    demo_pool_size: int | None = None  # demonstrations held in memory (first N of demo_shards); None: all
    shots: list[int] = field(default_factory=lambda: [0])  # demonstrations per query
    num_trials: int = 3  # seeded draws of demonstrations (1 at 0 shots)
    prompt: str = "Q: {question} A:"  # query; a demonstration appends demo_answer
    demo_answer: str = " {answer}"
    separator: str = "\n"  # between demonstrations and query


@dataclass
class EpisodeTaskConfig(EvalTaskBase):
    """Fields shared by the few-shot episode kinds (binding, deepmind)."""

    ways: list[int] = field(default_factory=lambda: [2])
    inner_shots: list[int] = field(default_factory=lambda: [1])  # images per category in the support
    repeats: list[int] = field(default_factory=lambda: [0])  # extra presentations of the whole support
    task_induction: list[bool] = field(default_factory=lambda: [False, True])
    question_template: str = "Q: {question} A:"  # the query line (naming tasks add answer_prefix)
    naming_question: str = "What is this?"  # naming tasks' question
    answer_prefix: str = "This is a"  # naming tasks: the query line ends with it; the model names the object


@dataclass
class BindingTaskConfig(EpisodeTaskConfig):
    """Offline fast-binding episodes over easy-VQA shapes (nonsense names)."""

    kind: str = "binding"
    num_trials: int = 3  # seeded episode sets
    num_episodes: int = 200  # episodes (support sets) per trial
    queries_per_episode: int = 1  # queries sharing one support set (its KV cache is reused)
    category: str = "shape"  # shape | color_shape
    split: str = "test"  # easy-VQA split the images come from


@dataclass
class DeepMindTaskConfig(EpisodeTaskConfig):
    """The paper's released few-shot sets (scripts/download_fewshot.sh): fixed episodes, one trial."""

    kind: str = "deepmind"
    root: str | None = None  # folder holding the extracted archives
    task: str | None = None  # open_ended_mi | real_name_mi | fast_vqa | guided_vqa


EvalTaskConfig = CaptionTaskConfig | VqaTaskConfig | BindingTaskConfig | DeepMindTaskConfig
EVAL_TASK_KINDS: dict[str, type] = {
    "caption": CaptionTaskConfig, "vqa": VqaTaskConfig, "binding": BindingTaskConfig, "deepmind": DeepMindTaskConfig,
}


def eval_task_from_dict(name: str, raw: Any) -> EvalTaskConfig:
    """Validate one task entry into the schema its ``kind`` names; one-line FrozenConfigError otherwise."""
    if isinstance(raw, tuple(EVAL_TASK_KINDS.values())):
        return raw
    if OmegaConf.is_config(raw):
        raw = OmegaConf.to_container(raw, resolve=True)
    if not isinstance(raw, dict):
        raise FrozenConfigError(f"eval task {name}: expected a mapping of settings, got {type(raw).__name__}")
    kind = raw.get("kind")
    if kind not in EVAL_TASK_KINDS:
        raise FrozenConfigError(f"eval task {name}: kind={kind!r}; set kind to one of {', '.join(EVAL_TASK_KINDS)}")
    schema = EVAL_TASK_KINDS[kind]
    allowed = [f.name for f in dataclasses.fields(schema)]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise FrozenConfigError(f"eval task {name} (kind={kind}): unknown key(s) {', '.join(unknown)}; "
                                f"a {kind} task takes {', '.join(allowed)}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", None)
        where = f"{key}: " if key else ""
        raise FrozenConfigError(f"eval task {name} (kind={kind}): {where}{str(err).splitlines()[0]}") from None
    except FrozenConfigError as err:
        raise FrozenConfigError(f"eval task {name}: {err}") from None


@dataclass
class EvalSuiteConfig:
    """A preset: named tasks (``eval=vqav2``, ``eval=fewshot_offline``, ...), each a dict with a
    ``kind`` until validated (``__post_init__``) into that kind's schema."""

    name: str = "custom"
    tasks: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tasks = {name: eval_task_from_dict(name, raw) for name, raw in self.tasks.items()}


@dataclass
class EvaluateConfig:
    eval: EvalSuiteConfig = field(default_factory=EvalSuiteConfig)
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(backend="none"))
    load_path: str | None = None  # a save_pretrained export, or a training run directory (its export/)
    data_root: str = "data"
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 (autocast) for generation
    num_gpus: int = 1
    run_dir: str | None = None  # default: Hydra's output dir
    max_examples: int | None = None  # overrides every task's max_examples (quick runs)
    tasks: list[str] | None = None  # run only these tasks of the preset
    # A model exported with trained_blind=true (trainer.blind) sees black images, as in training and
    # as the paper evaluates its train-blind baseline: its `image` condition runs as `black_images`.
    blind_model_sees_black_images: bool = True


def evaluate_config_problems(cfg: Any) -> list[str]:
    """Bad top-level values of an :class:`EvaluateConfig` (typed or composed), one line each.

    The task schemas of the eval section check their own fields; these are the entry point's settings.
    """
    return failed([
        (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
        one_of("precision", cfg.precision, ("fp32", "bf16")),
        one_of("device", cfg.device, DEVICES),
        (cfg.num_gpus >= 1, f"num_gpus must be >= 1, got {cfg.num_gpus}"),
        (cfg.max_examples is None or cfg.max_examples >= 1,
         f"max_examples must be >= 1 or null, got {cfg.max_examples}"),
    ]) + prefixed("logger", LoggerConfig.check(cfg.logger))


def validate_evaluate_config(cfg: EvaluateConfig) -> None:
    """Raise one :class:`FrozenConfigError` listing every problem of :func:`evaluate_config_problems`."""
    raise_problems(evaluate_config_problems(cfg))
