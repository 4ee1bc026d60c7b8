"""Generation from interleaved image/text prompts: embed, left-pad, decode with a KV cache.

Decoding goes through transformers' ``generate`` (greedy, beam search, stop strings, KV cache) on
``inputs_embeds``; position ids follow the attention mask, so left padding does not shift positions
and a batched prompt decodes exactly as it does alone. ``use_cache=False`` runs a plain greedy loop that
re-encodes the whole sequence at every step: the reference the cached path is tested against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
from PIL import Image

from frozen.prompts import split_prompt
from frozen.vision import check_images

if TYPE_CHECKING:
    from frozen.model import FrozenModel


def _image_tensor(model: "FrozenModel", image: Image.Image | torch.Tensor) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return model.preprocess(image)
    if torch.is_tensor(image):
        check_images(image.unsqueeze(0) if image.dim() == 3 else image, model.model_cfg.image_size)
        return image if image.dim() == 3 else image.squeeze(0)
    raise TypeError(f"images must be PIL images or [3, S, S] tensors, got {type(image).__name__}")


def embed_prompts(
    model: "FrozenModel", images: Sequence[Sequence[Image.Image | torch.Tensor]] | None, prompts: Sequence[str]
) -> list[torch.Tensor]:
    """One ``[L_i, D]`` embedding sequence per prompt: text tokens and ``[k, D]`` image prefixes in order.

    All images of the batch are encoded in one vision forward pass.
    """
    images = [[] for _ in prompts] if images is None else images
    if len(images) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(images)} image lists; give one list (maybe empty) per prompt")
    segments = [split_prompt(p, len(imgs)) for p, imgs in zip(prompts, images)]
    flat = [_image_tensor(model, img) for imgs in images for img in imgs]
    prefixes = model.encode_images(torch.stack(flat)) if flat else None  # [N, k, D]

    tok = model.tokenizer
    seqs, next_image = [], 0
    for segs in segments:
        parts: list[torch.Tensor] = []
        for j, text in enumerate(segs):
            if j > 0:  # an image sits between segment j-1 and segment j
                parts.append(prefixes[next_image])
                next_image += 1
            if text:
                ids = torch.tensor(tok(text, add_special_tokens=False).input_ids, device=model.device)
                parts.append(model.embed_tokens(ids))
        if not parts:
            raise ValueError("empty prompt: give some text or at least one <image>")
        seqs.append(torch.cat(parts))
    return seqs


def left_pad(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[L_i, D]`` sequences -> ``embeds [B, L, D]`` (zeros on the left) and ``mask [B, L]``."""
    longest = max(s.shape[0] for s in seqs)
    embeds = seqs[0].new_zeros(len(seqs), longest, seqs[0].shape[-1])
    mask = torch.zeros(len(seqs), longest, dtype=torch.long, device=seqs[0].device)
    for i, s in enumerate(seqs):
        embeds[i, longest - s.shape[0] :] = s
        mask[i, longest - s.shape[0] :] = 1
    return embeds, mask


def trim(text: str, stop_strings: Sequence[str]) -> str:
    """Cut at the earliest stop string (removed) and strip whitespace."""
    cut = len(text)
    for stop in stop_strings:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut].strip()


@torch.no_grad()
def greedy_uncached(lm, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """Reference greedy decoding without a KV cache: the full sequence is re-run at every step.

    Returns new token ids ``[B, <=max_new_tokens]``, ``pad_id`` after a sequence's EOS.
    """
    embed = lm.get_input_embeddings()
    out_ids = []
    done = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    for _ in range(max_new_tokens):
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding does not shift positions
        logits = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False).logits
        next_ids = logits[:, -1].argmax(-1)  # [B]
        next_ids = torch.where(done, torch.full_like(next_ids, pad_id), next_ids)
        out_ids.append(next_ids)
        done |= next_ids == eos_id
        if done.all():
            break
        embeds = torch.cat([embeds, embed(next_ids)[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return torch.stack(out_ids, dim=1)


@torch.no_grad()
def generate(
    model: "FrozenModel",
    images: Sequence[Sequence[Image.Image | torch.Tensor]] | None,
    prompts: Sequence[str] | str,
    *,
    max_new_tokens: int = 20,
    num_beams: int = 1,
    stop_strings: Sequence[str] | str | None = None,
    batch_size: int | None = None,
    use_cache: bool = True,
    **generate_kwargs: Any,
) -> list[str]:
    """See :meth:`frozen.model.FrozenModel.generate`."""
    if isinstance(prompts, str):
        prompts, images = [prompts], None if images is None else [images]  # one prompt, one image list
    stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
    if not use_cache and num_beams != 1:
        raise ValueError("use_cache=False is the greedy reference path; use num_beams=1 with it")
    tok = model.tokenizer
    was_training = model.training
    model.eval()
    texts: list[str] = []
    step = batch_size or len(prompts)
    try:
        for start in range(0, len(prompts), step):
            chunk_images = None if images is None else images[start : start + step]
            embeds, mask = left_pad(embed_prompts(model, chunk_images, prompts[start : start + step]))
            if use_cache:
                ids = model.lm.generate(
                    inputs_embeds=embeds,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    num_beams=num_beams,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                    stop_strings=stops or None,
                    tokenizer=tok if stops else None,
                    **generate_kwargs,
                )
            else:
                ids = greedy_uncached(model.lm, embeds, mask, max_new_tokens, tok.eos_token_id, tok.pad_token_id)
            texts += [trim(t, stops) for t in tok.batch_decode(ids, skip_special_tokens=True)]
    finally:
        model.train(was_training)
    return texts
