"""Typed configuration schemas. ``frozen/`` receives these dataclasses; Hydra lives at the edges.

YAML files under ``conf/`` extend these schemas (registered by :func:`register_configs`), so a wrong
key or a value of the wrong type fails when Hydra composes the config, before any work starts.
Values are checked once more by :func:`validate_train_config` for what types cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from frozen.errors import FrozenConfigError


@dataclass
class DataConfig:
    """Data settings (a Hydra structured config). Patterns are relative to ``data_root``."""

    train_shards: str  # brace pattern(s), "::"-separated, e.g. "easyvqa/captions-train-{000000..000003}.tar"
    val_shards: str | None = None
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
        if self.per_image_caption not in ("random", "first"):
            raise FrozenConfigError(f"per_image_caption must be 'random' or 'first', got {self.per_image_caption!r}")
        if self.max_length < 2:
            raise FrozenConfigError(f"max_length must be >= 2, got {self.max_length}")
        if self.num_workers < 0 or self.prefetch_factor < 1 or self.shuffle_buffer < 0:
            raise FrozenConfigError("num_workers and shuffle_buffer must be >= 0 and prefetch_factor >= 1")
        for name, template, field_name in (
            ("caption_template", self.caption_template, "caption"),
            ("vqa_prompt", self.vqa_prompt, "question"),
            ("vqa_target", self.vqa_target, "answer"),
        ):
            try:
                template.format(**{field_name: "x"})
            except (KeyError, IndexError, ValueError) as exc:
                raise FrozenConfigError(
                    f"{name}={template!r} must only use the field {{{field_name}}} ({exc})"
                ) from None


@dataclass
class ModelConfig:
    """The trainable side: vision backbone and prefix mapper."""

    vision: str = "nf_resnet50"  # nf_resnet50 | resnet18 | resnet50 | tiny_cnn
    vision_pretrained: bool = False  # the paper trains the encoder from scratch
    num_prefix_tokens: int = 2  # k
    mapper: str = "linear"  # linear | mlp
    mapper_hidden_dim: int | None = None  # mlp only; default max(C, D)
    image_size: int = 224


@dataclass
class LMConfig:
    """The language model: frozen by default."""

    name: str = "gpt2"  # hub id, local directory, or smollm2-135m-instruct-gguf
    dtype: str = "float32"  # float32 | bfloat16 | float16: the dtype the frozen weights are held in
    trainable: bool = False  # the paper's "finetuned LM" ablation
    from_scratch: bool = False  # the paper's "LM from scratch" ablation (implies trainable)


@dataclass
class TrainerConfig:
    """Optimisation and loop settings. The paper: Adam(0.9, 0.95), constant lr 3e-4, batch 128."""

    max_steps: int = 10_000
    batch_size: int = 128  # global batch (all processes, all accumulation micro-steps)
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
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


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # wandb | none
    project: str = "frozen"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    # auto: online when an API key is configured, offline otherwise; WANDB_MODE overrides
    mode: str = "auto"  # auto | online | offline | disabled


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    data: Any = None  # DataConfig (registered as the data group schema below)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # The original README's arguments, kept as top-level keys.
    data_root: str = "data"  # where shard patterns are resolved (overrides data.data_root when set)
    num_gpus: int = 1  # processes per node; >1 on a machine without torchrun spawns them itself
    num_nodes: int = 1
    per_gpu_batchsize: int | None = None  # micro-batch per process; None = batch_size / world size
    load_path: str | None = None  # a checkpoint (.pt) or run directory to resume from
    init_from: str | None = None  # start from a trained export's weights (fresh optimizer, step 0)
    seed: int = 0
    run_dir: str | None = None  # default: Hydra's output dir (train.py) or outputs/run
    name: str = "frozen"


def accumulation_steps(cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    """``(per_process_micro_batch, accumulation_steps)`` from the global batch and the world size."""
    batch = cfg.trainer.batch_size
    micro = cfg.per_gpu_batchsize or batch // world_size
    if micro < 1 or batch % (micro * world_size):
        raise FrozenConfigError(
            f"trainer.batch_size={batch} must be a multiple of per_gpu_batchsize ({micro}) x processes ({world_size}); "
            "change one of them"
        )
    return micro, batch // (micro * world_size)


def validate_train_config(cfg: TrainConfig) -> None:
    """Checks that types cannot express; each failure is one line naming the key and the fix."""
    t = cfg.trainer
    checks = [
        (t.max_steps >= 1, f"trainer.max_steps must be >= 1, got {t.max_steps}"),
        (t.lr > 0, f"trainer.lr must be > 0, got {t.lr}"),
        (t.schedule in ("constant", "cosine"), f"trainer.schedule must be constant or cosine, got {t.schedule!r}"),
        (t.precision in ("auto", "bf16", "fp16", "fp32"), f"trainer.precision must be auto, bf16, fp16 or fp32, got {t.precision!r}"),
        (t.device in ("auto", "cpu", "cuda"), f"trainer.device must be auto, cpu or cuda, got {t.device!r}"),
        (cfg.num_gpus >= 1 and cfg.num_nodes >= 1, f"num_gpus and num_nodes must be >= 1, got {cfg.num_gpus}, {cfg.num_nodes}"),
        (cfg.model.num_prefix_tokens >= 1, f"model.num_prefix_tokens must be >= 1, got {cfg.model.num_prefix_tokens}"),
        (cfg.logger.backend in ("wandb", "none"), f"logger.backend must be wandb or none, got {cfg.logger.backend!r}"),
        (
            cfg.logger.mode in ("auto", "online", "offline", "disabled"),
            f"logger.mode must be auto, online, offline or disabled, got {cfg.logger.mode!r}",
        ),
        (cfg.data is not None, "no data config: pick one with data=easyvqa (or coco, cc3m, vqav2, custom)"),
    ]
    for ok, message in checks:
        if not ok:
            raise FrozenConfigError(message)
    accumulation_steps(cfg, cfg.num_gpus * cfg.num_nodes)


# ---------------------------------------------------------------------------------------------- eval
@dataclass
class EvalTaskConfig:
    """One evaluation task. ``kind`` picks which fields matter (see conf/eval/*.yaml)."""

    kind: str = "vqa"  # vqa | caption | binding (easy-VQA, offline) | deepmind (released few-shot sets)
    # vqa / caption: shard patterns relative to data_root
    shards: str | None = None
    demo_shards: str | None = None  # vqa: pool of demonstrations (default: the evaluated split itself)
    demo_pool_size: int = 2000  # demonstrations held in memory (first N of demo_shards)
    shots: list[int] = field(default_factory=lambda: [0])  # vqa: demonstrations per query
    conditions: list[str] = field(default_factory=lambda: ["image", "blind"])  # image | blind | text_demos
    num_trials: int = 3  # seeded trials wherever demonstrations are sampled
    prompt: str = "Q: {question} A:"  # vqa query; a demonstration appends demo_answer
    demo_answer: str = " {answer}"
    separator: str = "\n"  # between demonstrations and query
    caption_prompt: str = ""  # caption: text after the image
    max_examples: int | None = None  # cap on evaluated items (the first N of the split)
    max_new_tokens: int = 10
    min_new_tokens: int = 0  # >0: EOS cannot end an answer earlier (an instruct LM may emit EOS at once)
    max_answer_words: int | None = None  # keep only the first N words of an answer (None: all, cut at newline)
    # binding / deepmind episodes
    root: str | None = None  # deepmind: folder holding the extracted archives
    task: str | None = None  # deepmind: open_ended_mi | real_name_mi | fast_vqa | guided_vqa
    ways: list[int] = field(default_factory=lambda: [2])
    inner_shots: list[int] = field(default_factory=lambda: [1])
    repeats: int = 0  # extra presentations of the support set
    task_induction: list[bool] = field(default_factory=lambda: [False, True])
    num_episodes: int = 200  # binding: episodes (support sets) per trial
    queries_per_episode: int = 1  # binding: queries sharing one support set (its KV cache is reused)
    category: str = "shape"  # binding: shape | color_shape
    split: str = "test"  # binding: easy-VQA split the images come from


@dataclass
class EvalSuiteConfig:
    """A preset: named tasks (``eval=vqav2``, ``eval=fewshot_offline``, ...)."""

    name: str = "custom"
    tasks: dict[str, EvalTaskConfig] = field(default_factory=dict)


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


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore; YAML in conf/ extends them."""
    from hydra.core.config_store import ConfigStore


    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="lm", name="lm_schema", node=LMConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(group="eval", name="eval_schema", node=EvalSuiteConfig)

