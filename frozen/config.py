"""Typed configuration schemas. ``frozen/`` receives these dataclasses; Hydra lives at the edges.

YAML files under ``conf/`` extend these schemas (registered by :func:`register_configs`), so a wrong
key or a value of the wrong type fails when Hydra composes the config, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass


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
