"""Typed configuration schemas. ``frozen/`` receives these dataclasses; Hydra lives at the edges.

YAML files under ``conf/`` extend these schemas (registered by :func:`register_configs`), so a wrong
key or a value of the wrong type fails when Hydra composes the config, before any work starts.

Every value check that types cannot express lives here, once: each schema has a static ``check(c)``
returning one line per problem (key, value, fix). ``c`` is the dataclass or the composed
``DictConfig`` node, so :mod:`frozen.preflight` reports the problems of a whole run at once, before
anything is built, while ``__post_init__`` makes a directly constructed schema fail with the same lines.

Longer than ~300 lines on purpose: every schema of the config surface, with its checks, is in this
one file (one place to read what a key means and accepts; ``register_configs`` stores them together).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, OmegaConf

from frozen.errors import FrozenConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # trainer.precision; resolved to a concrete one at run time
DEVICES = ("auto", "cpu", "cuda")
LM_DTYPES = ("float32", "bfloat16", "float16")  # torch dtypes in frozen.model.lm.DTYPES
MAPPERS = ("linear", "mlp")


def _failed(checks: Iterable[tuple[bool, str]]) -> list[str]:
    return [message for ok, message in checks if not ok]


def _prefixed(prefix: str, problems: list[str]) -> list[str]:
    return [f"{prefix}.{p}" for p in problems]


def raise_problems(problems: list[str]) -> None:
    """Raise one :class:`FrozenConfigError` listing every problem, one line each (nothing if none)."""
    if problems:
        raise FrozenConfigError("\n".join(problems))


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> tuple[bool, str]:
    return value in allowed, f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {value!r}"


@dataclass
class DataConfig:
    """Data settings (a Hydra structured config). Patterns are relative to ``data_root``."""

    train_shards: str  # brace pattern(s), "::"-separated, e.g. "easyvqa/captions-train-{000000..000003}.tar"
    val_shards: str | None = None
    # In a composed train config this is "${data_root}" (see register_configs): the top-level
    # data_root is the one source; this field carries it to the data functions.
    data_root: str = "data"
    caption_template: str = " {caption}"  # target text of a caption sample
    vqa_prompt: str = " Q: {question} A:"  # prompt (not trained on) of a VQA sample
    vqa_target: str = " {answer}"  # target text of a VQA sample
    max_length: int = 64  # tokens per example, EOS included
    shuffle_buffer: int = 1000  # examples per worker; <= 1 disables shuffling
    num_workers: int = 2  # DataLoader workers per rank (0: everything in the main process)
    per_image_caption: str = "random"  # "random" or "first" caption when a sample holds several
    prefetch_factor: int = 2  # batches prefetched per worker

    def __post_init__(self) -> None:
        raise_problems(DataConfig.check(self))

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value (field names relative to the data config)."""
        problems = _failed([
            _one_of("per_image_caption", c.per_image_caption, ("random", "first")),
            (c.max_length >= 2, f"max_length must be >= 2 (one text token + EOS), got {c.max_length}"),
            (c.num_workers >= 0, f"num_workers must be >= 0, got {c.num_workers}"),
            (c.shuffle_buffer >= 0, f"shuffle_buffer must be >= 0, got {c.shuffle_buffer}"),
            (c.prefetch_factor >= 1, f"prefetch_factor must be >= 1, got {c.prefetch_factor}"),
        ])
        for name, field_name in (("caption_template", "caption"), ("vqa_prompt", "question"), ("vqa_target", "answer")):
            template = getattr(c, name)
            try:
                template.format(**{field_name: "x"})
            except (KeyError, IndexError, ValueError) as exc:
                problems.append(f"{name}={template!r} must only use the field {{{field_name}}} ({exc})")
        return problems


@dataclass
class ModelConfig:
    """The trainable side: vision backbone and prefix mapper."""

    vision: str = "nf_resnet50"  # nf_resnet50 | resnet18 | resnet50 | tiny_cnn (frozen.model.vision.BACKBONES)
    vision_pretrained: bool = False  # the paper trains the encoder from scratch
    num_prefix_tokens: int = 2  # k
    mapper: str = "linear"  # linear | mlp
    mapper_hidden_dim: int | None = None  # mlp only; default max(C, D)
    image_size: int = 224

    def __post_init__(self) -> None:
        raise_problems(ModelConfig.check(self))

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value. Backbone names are checked against their registry by preflight."""
        return _failed([
            (c.num_prefix_tokens >= 1, f"num_prefix_tokens must be >= 1, got {c.num_prefix_tokens}; the paper uses 2"),
            (c.image_size >= 8, f"image_size must be >= 8 pixels, got {c.image_size}; the paper uses 224"),
            _one_of("mapper", c.mapper, MAPPERS),
            (c.mapper_hidden_dim is None or c.mapper_hidden_dim >= 1,
             f"mapper_hidden_dim must be >= 1 or null, got {c.mapper_hidden_dim}"),
        ])


@dataclass
class LMConfig:
    """The language model: frozen by default."""

    name: str = "gpt2"  # hub id, local directory, or smollm2-135m-instruct-gguf (presets: conf/lm/*.yaml)
    dtype: str = "float32"  # float32 | bfloat16 | float16: the dtype the frozen weights are held in
    trainable: bool = False  # the paper's "finetuned LM" ablation
    from_scratch: bool = False  # the paper's "LM from scratch" ablation (implies trainable)

    def __post_init__(self) -> None:
        raise_problems(LMConfig.check(self))

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value; whether the LM can be found is checked by preflight."""
        return _failed([
            (bool(c.name), "name is empty; give a hub id, a local save_pretrained folder or a conf/lm preset"),
            _one_of("dtype", c.dtype, LM_DTYPES),
        ])


@dataclass
class TrainerConfig:
    """Optimisation and loop settings. The paper: Adam(0.9, 0.95), constant lr 3e-4, batch 128."""

    max_steps: int = 10_000
    batch_size: int = 128  # global batch (all processes, all accumulation micro-steps)
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # Adam (beta1, beta2)
    weight_decay: float = 0.0
    eps: float = 1e-8
    schedule: str = "constant"  # constant | cosine (both after linear warmup)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    precision: str = "auto"  # auto (bf16 where supported, else fp32) | bf16 | fp16 | fp32
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False  # torch.compile the vision encoder + mapper
    activation_checkpointing: bool = False  # recompute LM activations in backward (saves memory)
    blind: bool = False  # the paper's train-blind ablation: every image is replaced by zeros
    log_every: int = 10
    val_every: int = 500  # 0 disables periodic validation
    val_batches: int = 20
    num_sample_captions: int = 8  # val images captioned at each validation (console + W&B table)
    ckpt_every: int = 500  # 0: only the final checkpoint
    keep_last: int = 3
    max_nonfinite: int = 10  # consecutive skipped (non-finite) steps before the run stops
    threads: int = 0  # torch intra-op threads on CPU; 0 keeps torch's default
    strategy: str = "ddp"  # ddp (every rank holds the whole LM) | fsdp (the frozen LM sharded over ranks, FSDP2)
    fsdp_cpu_offload: bool = False  # fsdp on CUDA: keep the LM's shards in host memory between uses

    def __post_init__(self) -> None:
        raise_problems(TrainerConfig.check(self))

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value (field names relative to the trainer config)."""
        return _failed([
            (c.max_steps >= 1, f"max_steps must be >= 1, got {c.max_steps}"),
            (c.batch_size >= 1, f"batch_size must be >= 1, got {c.batch_size}"),
            (c.lr > 0, f"lr must be > 0, got {c.lr}; the paper uses 3e-4"),
            (len(c.betas) == 2 and all(0 <= b < 1 for b in c.betas),
             f"betas must be two numbers in [0, 1), got {list(c.betas)}"),
            (c.weight_decay >= 0, f"weight_decay must be >= 0, got {c.weight_decay}"),
            (c.eps > 0, f"eps must be > 0, got {c.eps}"),
            _one_of("schedule", c.schedule, ("constant", "cosine")),
            (c.warmup_steps >= 0, f"warmup_steps must be >= 0, got {c.warmup_steps}"),
            (0 <= c.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {c.min_lr_ratio}"),
            (c.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables clipping), got {c.grad_clip}"),
            _one_of("precision", c.precision, PRECISIONS),
            _one_of("device", c.device, DEVICES),
            (c.log_every >= 1, f"log_every must be >= 1, got {c.log_every}"),
            (c.val_every >= 0, f"val_every must be >= 0 (0 disables validation), got {c.val_every}"),
            (c.ckpt_every >= 0, f"ckpt_every must be >= 0 (0: only the final checkpoint), got {c.ckpt_every}"),
            (c.val_batches >= 1, f"val_batches must be >= 1, got {c.val_batches}"),
            (c.num_sample_captions >= 0, f"num_sample_captions must be >= 0, got {c.num_sample_captions}"),
            (c.keep_last >= 1, f"keep_last must be >= 1, got {c.keep_last}"),
            (c.max_nonfinite >= 1, f"max_nonfinite must be >= 1, got {c.max_nonfinite}"),
            (c.threads >= 0, f"threads must be >= 0 (0 keeps torch's default), got {c.threads}"),
        ])


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # wandb | none
    project: str = "frozen"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    # auto: online when an API key is configured, offline otherwise; WANDB_MODE overrides
    mode: str = "auto"  # auto | online | offline | disabled

    def __post_init__(self) -> None:
        raise_problems(LoggerConfig.check(self))

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value (field names relative to the logger config)."""
        return _failed([
            _one_of("backend", c.backend, ("wandb", "none")),
            _one_of("mode", c.mode, ("auto", "online", "offline", "disabled")),
        ])


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    data: DataConfig | None = None  # chosen with data=<conf/data/*.yaml>; None only before composition
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # The original README's arguments, kept as top-level keys.
    data_root: str = "data"  # where shard patterns are resolved: the single source (data.data_root follows it)
    num_gpus: int = 1  # processes per node; >1 on a machine without torchrun spawns them itself
    num_nodes: int = 1
    per_gpu_batchsize: int | None = None  # micro-batch per process; None = batch_size / world size
    load_path: str | None = None  # a checkpoint (.pt) or run directory to resume from
    init_from: str | None = None  # start from a trained export's weights (fresh optimizer, step 0)
    seed: int = 0
    run_dir: str | None = None  # default: Hydra's output dir (train.py) or outputs/run
    name: str = "frozen"


def _batch_split_problem(batch: int, per_gpu: int | None, world_size: int) -> tuple[int, str | None]:
    micro = per_gpu or batch // world_size
    if micro < 1 or batch % (micro * world_size):
        return micro, (
            f"trainer.batch_size={batch} must be a multiple of per_gpu_batchsize ({micro}) x processes ({world_size}); "
            "change one of them"
        )
    return micro, None


def accumulation_steps(cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    """``(per_process_micro_batch, accumulation_steps)`` from the global batch and the world size."""
    micro, problem = _batch_split_problem(cfg.trainer.batch_size, cfg.per_gpu_batchsize, world_size)
    raise_problems([problem] if problem else [])
    return micro, cfg.trainer.batch_size // (micro * world_size)


def train_config_problems(cfg: Any) -> list[str]:
    """Every bad value of a train config (typed or composed ``DictConfig``), one line each, full key names."""
    problems = []
    for key, schema in (("model", ModelConfig), ("lm", LMConfig), ("trainer", TrainerConfig), ("logger", LoggerConfig)):
        problems += _prefixed(key, schema.check(getattr(cfg, key)))
    if cfg.data is None:
        problems.append("no data config: pick one with data=easyvqa (or coco, cc3m, vqav2, custom)")
    else:
        problems += _prefixed("data", DataConfig.check(cfg.data))
        if cfg.data.data_root != cfg.data_root:
            problems.append(f"data.data_root={cfg.data.data_root!r} differs from data_root={cfg.data_root!r}; "
                            "set only the top-level data_root (data.data_root follows it)")
    problems += _failed([
        (cfg.num_gpus >= 1, f"num_gpus must be >= 1, got {cfg.num_gpus}"),
        (cfg.num_nodes >= 1, f"num_nodes must be >= 1, got {cfg.num_nodes}"),
        (cfg.per_gpu_batchsize is None or cfg.per_gpu_batchsize >= 1,
         f"per_gpu_batchsize must be >= 1 or null, got {cfg.per_gpu_batchsize}"),
    ])
    if not problems:  # the split needs sane numbers to be meaningful
        _, split = _batch_split_problem(cfg.trainer.batch_size, cfg.per_gpu_batchsize, cfg.num_gpus * cfg.num_nodes)
        problems += [split] if split else []
    return problems


def validate_train_config(cfg: TrainConfig) -> None:
    """Raise one :class:`FrozenConfigError` listing every problem of :func:`train_config_problems`."""
    raise_problems(train_config_problems(cfg))


def evaluate_config_problems(cfg: Any) -> list[str]:
    """Bad top-level values of an :class:`EvaluateConfig` (typed or composed), one line each.

    The task schemas of the eval section check their own fields; these are the entry point's settings.
    """
    return _failed([
        (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
        _one_of("precision", cfg.precision, ("fp32", "bf16")),
        _one_of("device", cfg.device, DEVICES),
        (cfg.num_gpus >= 1, f"num_gpus must be >= 1, got {cfg.num_gpus}"),
        (cfg.max_examples is None or cfg.max_examples >= 1,
         f"max_examples must be >= 1 or null, got {cfg.max_examples}"),
    ]) + _prefixed("logger", LoggerConfig.check(cfg.logger))


# ---------------------------------------------------------------------------------------------- eval
# A preset holds named tasks of four kinds, each with its own schema. Hydra 1.3 has no tagged
# unions, so ``EvalSuiteConfig.tasks`` is a ``dict[str, Any]`` at composition time and each entry is
# validated into the schema its ``kind`` names by :func:`eval_task_from_dict` (called from
# ``EvalSuiteConfig.__post_init__``, i.e. by ``OmegaConf.to_object``): an unknown key or a wrong
# type is one line naming the task, the key and the fields that kind accepts.

EVAL_CONDITIONS: tuple[str, ...] = ("image", "no_image", "black_images", "text_demos")
"""``image``: every image; ``no_image``: text only, no image or marker anywhere (the bare LM);
``black_images``: every image replaced by zeros, its prefix tokens kept (how the paper evaluates
its train-blind model); ``text_demos``: demonstrations without their images, the query with its own."""

RENAMED_CONDITIONS = {"blind": "no_image (the text-only LM) or black_images (images blacked out, prefixes kept)"}


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
            if c in RENAMED_CONDITIONS:
                raise FrozenConfigError(f"condition {c!r} was renamed: use {RENAMED_CONDITIONS[c]}")
            if c not in EVAL_CONDITIONS:
                raise FrozenConfigError(f"unknown condition {c!r}; use {', '.join(EVAL_CONDITIONS)}")


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
    import dataclasses

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

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


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore; YAML in conf/ extends them."""
    from hydra.core.config_store import ConfigStore

    if not OmegaConf.has_resolver("if_null"):  # conf/'s hydra.run.dir follows run_dir when one is given
        OmegaConf.register_new_resolver("if_null", lambda value, default: default if value is None else value)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="lm", name="lm_schema", node=LMConfig)
    # data_root is defined once, at the top level of train.yaml (the original README's argument);
    # the data group only interpolates it, so `python train.py data_root=/x` moves every pattern.
    cs.store(group="data", name="data_schema", node=DataConfig(train_shards=MISSING, data_root="${data_root}"))
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(group="eval", name="eval_schema", node=EvalSuiteConfig)
