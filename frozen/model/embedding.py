"""Prompts -> LM inputs: image prefixes and token embeddings in prompt order, left-padded into a batch,
and the check that a prompt and its answer fit the LM's positions.

Generation needs only a few things from a model, named by :class:`PrefixModel` (``FrozenModel`` has
them), so this module and the decoding modules never import ``FrozenModel``: no import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from PIL import Image

from frozen.config import ModelConfig
from frozen.errors import ContextLengthError, InputError
from frozen.model.prompts import Layout, Prompt, TokenizedPrompt
from frozen.model.vision import check_images, to_unit_float

ImageInput = Image.Image | torch.Tensor
EMPTY_PROMPT = "empty prompt: give some text or at least one <image>"


class PrefixModel(Protocol):
    """What generation uses of a model: its LM and tokenizer, the image path, the embedding table."""

    lm: Any  # a transformers causal LM
    tokenizer: Any
    model_cfg: ModelConfig  # image_size: the shape tensors are checked against
    training: bool

    @property
    def device(self) -> torch.device: ...

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...  # PIL -> [3, S, S]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...  # [B, 3, S, S] -> [B, k, D]

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor: ...  # [..., T] -> [..., T, D]

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...


def _image_tensor(model: PrefixModel, image: ImageInput) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return model.preprocess(image)
    if torch.is_tensor(image):
        # Checked one by one: stacking images of different sizes would fail with torch's own message.
        check_images(image.unsqueeze(0) if image.dim() == 3 else image, model.model_cfg.image_size)
        return to_unit_float(image if image.dim() == 3 else image.squeeze(0))  # uint8 pixels -> [0, 1]
    raise TypeError(f"images must be PIL images or [3, S, S] tensors, got {type(image).__name__}")


def encode(model: PrefixModel, images: Sequence[ImageInput]) -> list[torch.Tensor]:
    """All ``images`` in one vision forward pass -> one ``[k, D]`` prefix per image."""
    if not images:
        return []
    return list(model.encode_images(torch.stack([_image_tensor(model, img) for img in images])))


def embed_layout(model: PrefixModel, layout: Layout, prefixes: Sequence[torch.Tensor]) -> torch.Tensor:
    """``layout`` -> ``[L, D]``: token runs through the embedding table, image slot i -> ``prefixes[i]``."""
    if not layout:
        raise InputError(EMPTY_PROMPT)
    parts: list[torch.Tensor] = []
    run: list[int] = []
    for item in [*layout, None]:  # None flushes the last token run
        if item is not None and item >= 0:
            run.append(item)
            continue
        if run:
            parts.append(model.embed_tokens(torch.tensor(run, device=model.device)))  # [len(run), D]
            run = []
        if item is not None:
            parts.append(prefixes[-item - 1])  # [k, D]
    return torch.cat(parts)


def embed_tokenized(model: PrefixModel, prompts: Sequence[TokenizedPrompt]) -> list[torch.Tensor]:
    """One ``[L_i, D]`` sequence per prompt; all the batch's images go through the encoder at once."""
    prefixes = encode(model, [img for p in prompts for img in p.prompt.images])
    seqs, offset = [], 0
    for p in prompts:
        seqs.append(embed_layout(model, p.layout(), prefixes[offset : offset + p.prompt.num_images]))
        offset += p.prompt.num_images
    return seqs


def embed_prompts(
    model: PrefixModel, images: Sequence[Sequence[ImageInput]] | None, prompts: Sequence[str]
) -> list[torch.Tensor]:
    """One ``[L_i, D]`` embedding sequence per prompt string: text tokens and ``[k, D]`` image prefixes in order."""
    images = [[] for _ in prompts] if images is None else images
    if len(images) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(images)} image lists; "
                         "give one list (maybe empty) per prompt")
    return embed_tokenized(model, [Prompt.parse(p, imgs).tokenize(model.tokenizer) for p, imgs in zip(prompts, images)])


def context_limit(lm: Any) -> tuple[int, str] | None:
    """``(positions, config field)`` of a transformers LM, or None when its config sets no limit."""
    for name in ("n_positions", "max_position_embeddings"):  # GPT-2 aliases the second to the first
        value = getattr(lm.config, name, None)
        if isinstance(value, int) and value > 0:
            return value, name
    return None


def positions_needed(prompt: TokenizedPrompt, num_prefix_tokens: int) -> int:
    """The prompt's length in LM positions: its text tokens plus ``num_prefix_tokens`` (k) per image."""
    return sum(len(ids) for ids in prompt.ids) + num_prefix_tokens * prompt.prompt.num_images


def check_context(model: PrefixModel, prompts: Sequence[TokenizedPrompt], max_new_tokens: int) -> None:
    """One-line :class:`ContextLengthError` unless every prompt plus ``max_new_tokens`` fits the LM.

    Run before the LM sees any prompt: past its last position a learned position embedding fails
    with an ``IndexError`` (GPT-2, OPT) and a rotary one decodes quietly out of range.
    """
    limit = context_limit(model.lm)
    if limit is None or not prompts:
        return
    positions, field = limit
    k = model.model_cfg.num_prefix_tokens
    longest = max(range(len(prompts)), key=lambda i: positions_needed(prompts[i], k))
    p = prompts[longest]
    needed = positions_needed(p, k) + max_new_tokens
    if needed > positions:
        text = sum(len(ids) for ids in p.ids)
        where = f"prompt {longest} of {len(prompts)}" if len(prompts) > 1 else "the prompt"
        raise ContextLengthError(
            f"{where} needs {needed} positions ({text} text tokens + {p.prompt.num_images} image(s) x k={k} + "
            f"max_new_tokens={max_new_tokens}) but the LM has {positions} ({field}); use fewer shots, images "
            "or text, or a smaller max_new_tokens")


def check_prompts(model: PrefixModel, prompts: Sequence[TokenizedPrompt], max_new_tokens: int) -> None:
    """Every image tensor of every prompt (:func:`check_images`) and every length (:func:`check_context`),
    before the first batch runs: a bad input in a later batch must not stop a run halfway."""
    for p in prompts:
        if not p.prompt.num_images and not any(p.ids):
            raise InputError(EMPTY_PROMPT)
        for image in p.prompt.images:
            if torch.is_tensor(image):
                _image_tensor(model, image)
    check_context(model, prompts, max_new_tokens)


def left_pad(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[L_i, D]`` sequences -> ``embeds [B, L, D]`` (zeros on the left) and ``mask [B, L]``."""
    longest = max(s.shape[0] for s in seqs)
    embeds = seqs[0].new_zeros(len(seqs), longest, seqs[0].shape[-1])
    mask = torch.zeros(len(seqs), longest, dtype=torch.long, device=seqs[0].device)
    for i, s in enumerate(seqs):
        embeds[i, longest - s.shape[0] :] = s
        mask[i, longest - s.shape[0] :] = 1
    return embeds, mask
