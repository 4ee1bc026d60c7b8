"""Schemas of a training run (``python train.py``) and their one value check.

Each schema has a static ``check(c)`` returning one line per bad value; ``c`` is the dataclass or
the composed ``DictConfig`` node. :func:`train_config_problems` gathers them with full key names:
:func:`frozen.preflight.check_train` reports them before anything is built, and
:func:`validate_train_config` raises them for a config handed straight to the library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from frozen.config.checks import DEVICES, failed, one_of, prefixed, raise_problems

PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # trainer.precision; resolved to a concrete one at run time
LM_DTYPES = ("float32", "bfloat16", "float16")  # torch dtypes in frozen.model.lm.DTYPES
MAPPERS = ("linear", "mlp")
STRATEGIES = ("ddp", "fsdp")
PREEMPT_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP", "SIGXCPU")


@dataclass
class SampleTextConfig:
    """How a shard sample becomes text: the part of the data settings evaluation shares."""

    caption_template: str = " {caption}"  # target text of a caption sample
    vqa_prompt: str = " Q: {question} A:"  # prompt (not trained on) of a VQA sample
    vqa_target: str = " {answer}"  # target text of a VQA sample
    max_length: int = 64  # tokens per example, EOS included

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value (field names relative to the data config)."""
        problems = failed([
            (c.max_length >= 2, f"max_length must be >= 2 (one text token + EOS), got {c.max_length}"),
        ])
        for name, field_name in (("caption_template", "caption"), ("vqa_prompt", "question"), ("vqa_target", "answer")):
            template = getattr(c, name)
            try:
                template.format(**{field_name: "x"})
            except (KeyError, IndexError, ValueError) as exc:
                problems.append(f"{name}={template!r} must only use the field {{{field_name}}} ({exc})")
        return problems


@dataclass
class DataConfig(SampleTextConfig):
    """Training data (a Hydra structured config). Patterns are relative to the run's ``data_root``."""

    train_shards: str = MISSING  # brace pattern(s), "::"-separated, e.g. "easyvqa/captions-train-{000000..000003}.tar"
    val_shards: str | None = None
    shuffle_buffer: int = 1000  # examples per worker; <= 1 disables shuffling
    num_workers: int = 2  # DataLoader workers per rank (0: everything in the main process)
    per_image_caption: str = "random"  # "random" or "first" caption when a sample holds several
    prefetch_factor: int = 2  # batches prefetched per worker
    jpeg_draft: bool = True  # decode large JPEGs at a reduced DCT scale (>= image_size); PNG/small JPEG unchanged
    # Caption packing: several [k prefix slots][prompt][caption][EOS] segments share rows of up to
    # max_length + k positions, each attending only to itself (frozen.data.packing); the LM computes no padding.
    packing: bool = False
    # The visual prefix away from position 0 (frozen.data.interleave): several image-text pairs in ONE causal
    # context per row of up to max_length + k positions; the separator ("" = EOS) ends each pair but a row's last.
    interleave: bool = False
    interleave_separator: str = ""
    lead_text: str = ""  # fixed text before every image's prefix (evaluation must put it there too)
    text_before_image: float = 0.0  # probability of another example's text-only line before an image

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value (field names relative to the data config)."""
        return failed([
            (not (c.packing and c.interleave), "packing and interleave are exclusive (packing keeps captions apart, "
             "interleave joins them): set data.packing=false with data.interleave=true"),
            (not (c.packing and (c.lead_text or c.text_before_image > 0)),
             "data.lead_text and data.text_before_image lay out their own rows: set data.packing=false with them"),
            (0 <= c.text_before_image <= 1,
             f"text_before_image must be a probability in [0, 1], got {c.text_before_image}"),
            (c.interleave or not c.interleave_separator,
             "interleave_separator needs data.interleave=true (it separates the pairs of a row)"),
            one_of("per_image_caption", c.per_image_caption, ("random", "first")),
            (c.num_workers >= 0, f"num_workers must be >= 0, got {c.num_workers}"),
            (c.shuffle_buffer >= 0, f"shuffle_buffer must be >= 0, got {c.shuffle_buffer}"),
            (c.prefetch_factor >= 1, f"prefetch_factor must be >= 1, got {c.prefetch_factor}"),
        ]) + SampleTextConfig.check(c)


@dataclass
class ModelConfig:
    """The trainable side: vision backbone and prefix mapper."""

    vision: str = "nf_resnet50"  # nf_resnet50 | resnet18 | resnet50 | tiny_cnn (frozen.model.vision.BACKBONES)
    vision_pretrained: bool = False  # the paper trains the encoder from scratch
    num_prefix_tokens: int = 2  # k
    mapper: str = "linear"  # linear | mlp
    mapper_hidden_dim: int | None = None  # mlp only; default max(C, D)
    image_size: int = 224

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value. Backbone names are checked against their registry by preflight."""
        return failed([
            (c.num_prefix_tokens >= 1, f"num_prefix_tokens must be >= 1, got {c.num_prefix_tokens}; the paper uses 2"),
            (c.image_size >= 8, f"image_size must be >= 8 pixels, got {c.image_size}; the paper uses 224"),
            one_of("mapper", c.mapper, MAPPERS),
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

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value; whether the LM can be found is checked by preflight."""
        return failed([
            (bool(c.name), "name is empty; give a hub id, a local save_pretrained folder or a conf/lm preset"),
            one_of("dtype", c.dtype, LM_DTYPES),
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
    compile: bool = False  # torch.compile the training forward (vision encoder, mapper, frozen LM), dynamic shapes
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
    peak_tflops: float = 0.0  # accelerator peak for the log's MFU; 0: by GPU name (bf16 dense), none on CPU
    strategy: str = "ddp"  # ddp (every rank holds the whole LM) | fsdp (the frozen LM sharded over ranks, FSDP2)
    fsdp_cpu_offload: bool = False  # fsdp on CUDA: keep the LM's shards in host memory between uses
    # Signals that stop the run after the current step with a checkpoint (exit 75); [] keeps Python's defaults.
    preempt_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1", "SIGUSR2"])
    # Seconds a rank waits in one collective for the others before the run stops naming the lost rank.
    dist_timeout_s: float = 300.0
    # DDP/FSDP: ranks agree on a received signal every N steps (a collective the host waits for); one process
    # checks every step. N x step time + a checkpoint write must fit in Slurm's KillWait (30 s by default).
    preempt_check_every: int = 10
    # AdamW's fused kernel, which skips a non-finite step on the device (no host read, docs/host_syncs.md).
    # null: fused on an accelerator, where a read makes the host wait; unfused on CPU, where the host is the
    # device (a read costs no wait) and the unfused kernel keeps CPU results (make demo) bit for bit.
    fused_optimizer: Optional[bool] = None

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value (field names relative to the trainer config)."""
        return failed([
            (c.max_steps >= 1, f"max_steps must be >= 1, got {c.max_steps}"),
            (c.batch_size >= 1, f"batch_size must be >= 1, got {c.batch_size}"),
            (c.lr > 0, f"lr must be > 0, got {c.lr}; the paper uses 3e-4"),
            (len(c.betas) == 2 and all(0 <= b < 1 for b in c.betas),
             f"betas must be two numbers in [0, 1), got {list(c.betas)}"),
            (c.weight_decay >= 0, f"weight_decay must be >= 0, got {c.weight_decay}"),
            (c.eps > 0, f"eps must be > 0, got {c.eps}"),
            one_of("schedule", c.schedule, ("constant", "cosine")),
            (c.warmup_steps >= 0, f"warmup_steps must be >= 0, got {c.warmup_steps}"),
            (0 <= c.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {c.min_lr_ratio}"),
            (c.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables clipping), got {c.grad_clip}"),
            one_of("precision", c.precision, PRECISIONS),
            one_of("device", c.device, DEVICES),
            (c.log_every >= 1, f"log_every must be >= 1, got {c.log_every}"),
            (c.val_every >= 0, f"val_every must be >= 0 (0 disables validation), got {c.val_every}"),
            (c.ckpt_every >= 0, f"ckpt_every must be >= 0 (0: only the final checkpoint), got {c.ckpt_every}"),
            (c.val_batches >= 1, f"val_batches must be >= 1, got {c.val_batches}"),
            (c.num_sample_captions >= 0, f"num_sample_captions must be >= 0, got {c.num_sample_captions}"),
            (c.keep_last >= 1, f"keep_last must be >= 1, got {c.keep_last}"),
            (c.max_nonfinite >= 1, f"max_nonfinite must be >= 1, got {c.max_nonfinite}"),
            (c.preempt_check_every >= 1, f"preempt_check_every must be >= 1 (steps between preemption checks "
             f"of a distributed run), got {c.preempt_check_every}"),
            (c.threads >= 0, f"threads must be >= 0 (0 keeps torch's default), got {c.threads}"),
            (c.peak_tflops >= 0, f"peak_tflops must be >= 0 (0: from the GPU's name), got {c.peak_tflops}"),
            (not (c.compile and c.strategy == "fsdp"),
             "compile=true is not supported with strategy=fsdp (the sharded LM's hooks are untested under "
             "torch.compile); use strategy=ddp or compile=false"),
            one_of("strategy", c.strategy, STRATEGIES),
            (c.dist_timeout_s > 0, f"dist_timeout_s must be > 0 seconds (default 300), got {c.dist_timeout_s}"),
            *[(name in PREEMPT_SIGNALS, f"preempt_signals: unknown signal {name!r}; use names from "
               f"{', '.join(PREEMPT_SIGNALS)}") for name in c.preempt_signals],
            (not c.fsdp_cpu_offload or c.strategy == "fsdp", "fsdp_cpu_offload=true needs trainer.strategy=fsdp"),
            (not (c.fsdp_cpu_offload and c.device == "cpu"),
             "fsdp_cpu_offload=true offloads GPU shards to the host; with trainer.device=cpu they are in host "
             "memory already: set it to false"),
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

    @staticmethod
    def check(c: Any) -> list[str]:
        """One line per bad value (field names relative to the logger config)."""
        return failed([
            one_of("backend", c.backend, ("wandb", "none")),
            one_of("mode", c.mode, ("auto", "online", "offline", "disabled")),
        ])


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    data: DataConfig | None = None  # chosen with data=<conf/data/*.yaml>; None only before composition
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # The original README's arguments, kept as top-level keys.
    data_root: str = "data"  # where the shard patterns of data.* are resolved
    num_gpus: int = 1  # processes per node; >1 on a machine without torchrun spawns them itself
    num_nodes: int = 1
    per_gpu_batchsize: int | None = None  # micro-batch per process; None = batch_size / world size
    load_path: str | None = None  # a checkpoint (.pt) or run directory to resume from
    init_from: str | None = None  # start from a trained export's weights (fresh optimizer, step 0)
    seed: int = 0
    run_dir: str | None = None  # default: Hydra's output dir (train.py) or outputs/run
    name: str = "frozen"


def uses_slot_layout(cfg: Any) -> str | None:
    """The data option of a data config (dataclass or DictConfig) that lays the prefix out in slots
    (``"data.interleave=true"``, ...), or None."""
    if cfg.interleave:
        return "data.interleave=true"
    if cfg.lead_text:
        return "data.lead_text"
    if cfg.text_before_image > 0:
        return "data.text_before_image"
    return None


def prefix_in_rows(cfg: Any) -> str | None:
    """The data option that puts prefix slots inside a data config's training rows (``"data.packing=true"``
    or a slot layout's, :func:`uses_slot_layout`), or None. With one, the LM must be built to take them
    there (``FrozenModel(..., packing=True)``) and preflight names it when the LM cannot."""
    return "data.packing=true" if cfg.packing else uses_slot_layout(cfg)


def _batch_split_problem(batch: int, per_gpu: int | None, world_size: int) -> tuple[int, str | None]:
    micro = per_gpu or batch // world_size
    if micro < 1 or batch % (micro * world_size):
        return micro, (
            f"trainer.batch_size={batch} must be a multiple of per_gpu_batchsize ({micro}) x processes ({world_size}); "
            "change one of them"
        )
    return micro, None


def accumulation_steps(cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    """``(per_process_micro_batch, accumulation_steps)`` from the global batch and the world size.

    The configured world (``num_gpus x num_nodes``) was checked with the other values; a launcher
    (torchrun, Slurm) may start another number of processes, so the actual split is judged here.
    """
    micro, problem = _batch_split_problem(cfg.trainer.batch_size, cfg.per_gpu_batchsize, world_size)
    raise_problems([problem] if problem else [])
    return micro, cfg.trainer.batch_size // (micro * world_size)


def train_config_problems(cfg: Any) -> list[str]:
    """Every bad value of a train config (typed or composed ``DictConfig``), one line each, full key names."""
    problems = []
    for key, schema in (("model", ModelConfig), ("lm", LMConfig), ("trainer", TrainerConfig), ("logger", LoggerConfig)):
        problems += prefixed(key, schema.check(getattr(cfg, key)))
    if cfg.data is None:
        problems.append("no data config: pick one with data=easyvqa (or coco, cc3m, vqav2, custom)")
    else:
        problems += prefixed("data", DataConfig.check(cfg.data))
    problems += failed([
        (cfg.num_gpus >= 1, f"num_gpus must be >= 1, got {cfg.num_gpus}"),
        (cfg.num_nodes >= 1, f"num_nodes must be >= 1, got {cfg.num_nodes}"),
        (cfg.per_gpu_batchsize is None or cfg.per_gpu_batchsize >= 1,
         f"per_gpu_batchsize must be >= 1 or null, got {cfg.per_gpu_batchsize}"),
        (cfg.trainer.strategy != "fsdp" or not (cfg.lm.trainable or cfg.lm.from_scratch),
         "trainer.strategy=fsdp shards a frozen LM; the lm.trainable / lm.from_scratch ablations train the "
         "LM itself: use trainer.strategy=ddp for them"),
    ])
    if not problems:  # the split needs sane numbers to be meaningful
        _, split = _batch_split_problem(cfg.trainer.batch_size, cfg.per_gpu_batchsize, cfg.num_gpus * cfg.num_nodes)
        problems += [split] if split else []
    return problems


def validate_train_config(cfg: TrainConfig) -> None:
    """Raise one :class:`FrozenConfigError` listing every problem of :func:`train_config_problems`."""
    raise_problems(train_config_problems(cfg))
