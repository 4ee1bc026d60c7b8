"""FrozenModel: a trainable vision encoder + prefix mapper in front of a frozen causal LM.

Training input is ``[visual prefix (k embeddings)][caption tokens][EOS]``; the loss covers caption
tokens (and EOS) only, and gradients flow *through* the frozen LM into mapper and encoder.
Generation runs in :mod:`frozen.model.generation`; the export format is :mod:`frozen.model.export`,
its card :mod:`frozen.model.card`, its hub transfer :mod:`frozen.model.hub`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

import frozen.model.generation as generation
from frozen.config import LMConfig, ModelConfig, raise_problems
from frozen.errors import FrozenConfigError
from frozen.model import hub
from frozen.model.card import write_model_card
from frozen.model.export import WEIGHTS_NAME, TrainingFacts, export_config, read_configs, read_weights, write_export
from frozen.model.lm import embedding_dim, load_lm
from frozen.model.mapper import PrefixMapper
from frozen.model.packed import packed_forward
from frozen.model.prompts import Prompt
from frozen.model.vision import build_vision, check_images, image_transform, to_unit_float


@dataclass
class FrozenOutput:
    loss: torch.Tensor | None  # mean cross-entropy over caption tokens (prefix and padding excluded)
    logits: torch.Tensor  # [B, k+T, V]: positions of the prefix and the text


class FrozenModel(nn.Module):
    """Vision backbone -> prefix mapper -> frozen LM. See the README for usage."""

    def __init__(self, model_cfg: ModelConfig | None = None, lm_cfg: LMConfig | None = None, lm_on_meta: bool = False,
                 packing: bool | str = False):
        """``lm_on_meta``: the LM's architecture without weights (``trainer.strategy=fsdp``, ranks > 0).
        ``packing``: refuse before loading an LM that cannot be trained on packed batches (a string: the data
        option with prefix slots inside rows that asks, :mod:`frozen.data.interleave`)."""
        super().__init__()
        self.model_cfg = model_cfg = model_cfg or ModelConfig()
        self.lm_cfg = lm_cfg = lm_cfg or LMConfig()
        # k >= 1, image_size and the mapper kind were checked by ModelConfig (frozen.config) on construction.
        self.vision = build_vision(model_cfg.vision, pretrained=model_cfg.vision_pretrained)
        self.lm, self.tokenizer = load_lm(
            lm_cfg.name,
            dtype=lm_cfg.dtype,
            trainable=lm_cfg.trainable,
            from_scratch=lm_cfg.from_scratch,
            on_meta=lm_on_meta,
            packing=packing,
        )
        # C read off the backbone, D off the LM's input embedding: never duplicated in config.
        self.mapper = PrefixMapper(
            self.vision.num_features,
            embedding_dim(self.lm),
            num_tokens=model_cfg.num_prefix_tokens,
            kind=model_cfg.mapper,
            hidden_dim=model_cfg.mapper_hidden_dim,
        )
        self.preprocess = image_transform(model_cfg.image_size)

    # ------------------------------------------------------------------ properties
    @property
    def num_prefix_tokens(self) -> int:
        return self.model_cfg.num_prefix_tokens

    @property
    def lm_is_frozen(self) -> bool:
        return not (self.lm_cfg.trainable or self.lm_cfg.from_scratch)

    @property
    def device(self) -> torch.device:
        return next(self.mapper.parameters()).device

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer should see (vision + mapper; the LM only in its ablations)."""
        return [p for p in self.parameters() if p.requires_grad]

    def enable_activation_checkpointing(self, enabled: bool = True) -> int:
        """Recompute each LM decoder layer's activations in backward instead of storing them.

        transformers' own switch (``activation_checkpointing_enable``) only acts on layers in train
        mode, and a frozen LM stays in eval mode (putting it in train mode would turn on OPT's
        dropout), so it would silently do nothing here. Instead each decoder layer's ``forward`` is
        wrapped in non-reentrant ``torch.utils.checkpoint`` whenever autograd is recording; under
        ``no_grad`` (validation, generation, KV cache) layers run as usual. ``enabled=False`` undoes it.
        Returns the number of layers.
        """
        from torch.utils.checkpoint import checkpoint
        from transformers.modeling_layers import GradientCheckpointingLayer

        def checkpointed(forward, *args, **kwargs):
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)

        layers = [m for m in self.lm.modules() if isinstance(m, GradientCheckpointingLayer)]
        if not layers:
            raise FrozenConfigError(
                f"activation_checkpointing: {type(self.lm).__name__} has no transformers decoder layers to "
                "checkpoint; set trainer.activation_checkpointing=false for this LM"
            )
        for layer in layers:
            wrapped = "forward" in vars(layer)  # an instance attribute shadows the class's forward
            if enabled and not wrapped:
                layer.forward = partial(checkpointed, layer.forward)
            elif not enabled and wrapped:
                del layer.forward
        return len(layers)

    def train(self, mode: bool = True) -> "FrozenModel":
        # A frozen LM stays in eval mode (no dropout) even while encoder and mapper train.
        super().train(mode)
        if self.lm_is_frozen:
            self.lm.eval()
        return self

    # ------------------------------------------------------------------ forward
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled_call_impl is not None:  # trainer.compile: the value check runs here, outside the graph
            check_images(args[0] if args else kwargs.get("images"), self.model_cfg.image_size)
        return super().__call__(*args, **kwargs)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` float in [0, 1] or uint8 pixels -> visual prefix ``[B, k, D]`` in the LM's embedding
        dtype. uint8 (the training loader's batches) crosses to the device as bytes and becomes float there."""
        # Traced by torch.compile: shape and dtype only (a value read would split the graph; __call__ checks).
        check_images(images, self.model_cfg.image_size, values=not torch.compiler.is_compiling())
        images = to_unit_float(images.to(self.device))  # uint8 -> float32 here, after the copy
        prefix = self.mapper(self.vision(images))  # [B, C] -> [B, k, D]
        return prefix.to(self.lm.get_input_embeddings().weight.dtype)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(input_ids)  # [B, T] -> [B, T, D]

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        prefix_index: torch.Tensor | None = None,
    ) -> FrozenOutput:
        """Caption loss for ``[prefix][input_ids]``.

        ``labels`` (``[B, T]``, -100 = ignored) default to ``input_ids`` with padding (attention 0)
        ignored; the prefix positions are always ignored. The LM shifts labels itself, so the first
        caption token is predicted from the last prefix position. The loss is the mean over target
        tokens, or their sum divided by ``num_items_in_batch`` when given (the trainer passes the
        global target count so that data-parallel and accumulated steps average correctly).
        A packed batch (:mod:`frozen.data.packing`) gives ``position_ids`` and ``prefix_index`` instead
        of ``attention_mask``: :func:`frozen.model.packed.packed_forward`, logits ``[R, W, V]``.
        """
        if position_ids is not None or prefix_index is not None:
            if attention_mask is not None or position_ids is None or prefix_index is None or labels is None:
                raise ValueError("a packed batch needs position_ids, prefix_index and labels, and no attention_mask")
            out = packed_forward(self, images, input_ids, labels, position_ids, prefix_index, num_items_in_batch)
            return FrozenOutput(loss=out.loss, logits=out.logits)
        if input_ids.dim() != 2 or input_ids.shape[0] != images.shape[0]:
            raise ValueError(
                f"input_ids must be [B, T] with B = {images.shape[0]} images, got {tuple(input_ids.shape)}"
            )
        input_ids = input_ids.to(self.device)
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(self.device)
        if labels is None:
            labels = input_ids.masked_fill(attention_mask == 0, -100)
        prefix = self.encode_images(images)  # [B, k, D]
        b, k = prefix.shape[:2]
        inputs_embeds = torch.cat([prefix, self.embed_tokens(input_ids)], dim=1)  # [B, k+T, D]
        full_mask = torch.cat([attention_mask.new_ones(b, k), attention_mask], dim=1)  # [B, k+T]
        full_labels = torch.cat([labels.new_full((b, k), -100), labels.to(self.device)], dim=1)  # [B, k+T]
        extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
        out = self.lm(
            inputs_embeds=inputs_embeds, attention_mask=full_mask, labels=full_labels, use_cache=False, **extra
        )
        return FrozenOutput(loss=out.loss, logits=out.logits)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        images: Sequence[Sequence[Image.Image | torch.Tensor]] | None = None,
        prompts: Sequence[str | Prompt] | str | Prompt = "<image>",
        options: generation.GenerationOptions | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Answer interleaved prompts: ``prompts[i]`` has one ``<image>`` marker per image in ``images[i]``
        (or is a :class:`~frozen.model.prompts.Prompt`, with ``images=None``).

        Greedy (``num_beams=1``) or beam search, batched with left padding, KV-cached, cut at the
        first stop string (which is removed). Returns the generated text only, stripped. Options
        (``max_new_tokens``, ``num_beams``, ``stop_strings``, ``batch_size``, ``min_new_tokens``, ...):
        :class:`frozen.model.generation.GenerationOptions`, as keywords or as ``options``.
        """
        return generation.generate(self, images, prompts, options, **kwargs)

    def generate_shared(
        self,
        support_images: Sequence[Image.Image | torch.Tensor] | None,
        support_prompt: str | Prompt,
        query_images: Sequence[Sequence[Image.Image | torch.Tensor]] | None,
        query_prompts: Sequence[str | Prompt],
        options: generation.GenerationOptions | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Greedy answers to ``support_prompt + query_prompts[i]`` with the support computed once.

        The same answers as :meth:`generate` on the concatenated prompts; the support's images go
        through the encoder once and its embeddings through the LM once, and each batch of queries
        continues a copy of that KV cache (one support set, many questions: fast concept binding).
        Arguments: :func:`frozen.model.generation.generate_shared`.
        """
        return generation.generate_shared(
            self, support_images, support_prompt, query_images, query_prompts, options, **kwargs
        )

    # ------------------------------------------------------------------ save / load
    def save_pretrained(
        self,
        path: str | Path,
        *,
        metadata: dict[str, Any] | None = None,
        results: str | Path | dict | None = None,
        training: TrainingFacts | None = None,
    ) -> Path:
        """Write ``frozen_config.json`` + ``model.safetensors`` holding the trainable weights only,
        and the model card ``README.md`` (see :mod:`frozen.model.export`, :mod:`frozen.model.card`).

        The frozen LM is named (hub id or path) in the config, not copied; no pickle is written.
        ``metadata``: facts stored as top-level keys of ``frozen_config.json`` and shown on the card
        (``trained_blind``, ``training_data``, ``steps``, ``lm_revision``, ``license``, ...).
        ``training``: what ``train()`` knows about the run, shown on the card (its ``trained_blind``
        is stored in the config too, for evaluation); ``metadata`` wins over it.
        ``results`` is an evaluation's ``results.json`` (path or dict) whose rows the card shows
        (default: a ``results.json`` in the export or next to it).
        """
        path = Path(path)
        stored = {**(training.config_entries() if training else {}), **(metadata or {})}
        config = export_config(self.model_cfg, self.lm_cfg, stored)
        write_export(path, self.trainable_state_dict(), config)
        card_metadata = {**(training.card_metadata() if training else {}), **(metadata or {})}
        write_model_card(path, config, metadata=card_metadata, results=results)
        return path

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload Frozen export",
        metadata: dict[str, Any] | None = None,
        results: str | Path | dict | None = None,
    ) -> Any:
        """Upload this model's export (weights, config, model card; never the LM) to hub repo ``repo_id``.

        One call: the repo is created when missing. ``FrozenModel.from_pretrained(repo_id)`` loads it back.
        """
        return hub.push_to_hub(
            self,
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message,
            metadata=metadata,
            results=results,
        )

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but a frozen LM: vision + mapper parameters and buffers (BatchNorm statistics).

        Cloned to contiguous CPU tensors: tied LM weights (ablations only) share storage, which
        safetensors refuses, and checkpoints must not alias live parameters.
        """
        return {
            n: t.detach().clone().contiguous().cpu()
            for n, t in self.state_dict().items()
            if not (self.lm_is_frozen and n.startswith("lm."))
        }

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **overrides: Any) -> "FrozenModel":
        """A Frozen export (a folder, a training run directory holding ``export/``, or a hub repo id of
        an export) restores a trained model; an LM id or directory gives a new one.

        ``overrides`` set ModelConfig fields (``vision``, ``num_prefix_tokens``, ``image_size``, ...) or
        LMConfig fields with an ``lm_`` prefix (``lm_dtype="bfloat16"``).
        """
        path = hub.locate_export(name_or_path)
        if path is not None:
            model_cfg, lm_cfg = read_configs(path)
            weights = path / WEIGHTS_NAME
        else:
            model_cfg, lm_cfg, weights = ModelConfig(), LMConfig(name=str(name_or_path)), None
        model_cfg, lm_cfg = _apply_overrides(model_cfg, lm_cfg, overrides)
        model = cls(model_cfg, lm_cfg)
        if weights is not None:
            model.load_trainable_state(weights)
        return model

    def load_trainable_state(self, weights: str | Path) -> None:
        """Load a ``model.safetensors`` written by :meth:`save_pretrained`; every saved key must fit."""
        state = read_weights(weights)
        missing, unexpected = self.load_state_dict(state, strict=False)
        # A frozen LM comes from its own checkpoint; everything else must be in the file.
        really_missing = {n for n in missing if not (self.lm_is_frozen and n.startswith("lm."))}
        if unexpected or really_missing:
            raise FrozenConfigError(
                f"{weights} does not match this model: missing {sorted(really_missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}; "
                "was it saved with another vision/mapper/k setting?"
            )


def _apply_overrides(
    model_cfg: ModelConfig, lm_cfg: LMConfig, overrides: dict[str, Any]
) -> tuple[ModelConfig, LMConfig]:
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    lm_fields = {f.name for f in dataclasses.fields(LMConfig)}
    model_kw, lm_kw = {}, {}
    for key, value in overrides.items():
        if key in model_fields:
            model_kw[key] = value
        elif key.startswith("lm_") and key[3:] in lm_fields:
            lm_kw[key[3:]] = value
        else:
            valid = sorted(model_fields) + sorted(f"lm_{f}" for f in lm_fields)
            raise FrozenConfigError(f"unknown override {key!r}; valid overrides: {', '.join(valid)}")
    model_cfg, lm_cfg = dataclasses.replace(model_cfg, **model_kw), dataclasses.replace(lm_cfg, **lm_kw)
    raise_problems(ModelConfig.check(model_cfg) + LMConfig.check(lm_cfg))  # the library path's one check
    return model_cfg, lm_cfg
