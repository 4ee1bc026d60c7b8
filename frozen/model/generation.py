"""Generation from interleaved image/text prompts: embed, left-pad, decode with a KV cache.

Decoding goes through transformers' ``generate`` (greedy, beam search, stop strings, KV cache) on
``inputs_embeds``; position ids follow the attention mask, so left padding does not shift positions
and a batched prompt decodes exactly as it does alone. ``use_cache=False`` runs a plain greedy loop that
re-encodes the whole sequence at every step: the reference the cached path is tested against.

:func:`generate_shared` answers many queries that share one prompt prefix (a few-shot support set):
the prefix goes through the LM once (batch 1), its KV cache is copied to each batch of queries, and
only the query suffixes and the answers are computed per query. Its greedy output equals
:func:`generate` on the concatenated prompts.
"""

from __future__ import annotations

import inspect
import weakref
from typing import TYPE_CHECKING, Any, Sequence

import torch
from PIL import Image

from frozen.model.prompts import split_prompt
from frozen.model.vision import check_images

if TYPE_CHECKING:
    from frozen.model.frozen_model import FrozenModel

ImageInput = Image.Image | torch.Tensor
# A prompt's layout: one entry per text token (its id, >= 0) or per image (-(1 + its index in the
# prompt's image list)); an image entry stands for that image's k prefix embeddings.
Layout = list[int]


def _image_tensor(model: "FrozenModel", image: ImageInput) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return model.preprocess(image)
    if torch.is_tensor(image):
        check_images(image.unsqueeze(0) if image.dim() == 3 else image, model.model_cfg.image_size)
        return image if image.dim() == 3 else image.squeeze(0)
    raise TypeError(f"images must be PIL images or [3, S, S] tensors, got {type(image).__name__}")


def _layout(tokenizer: Any, prompt: str, num_images: int) -> Layout:
    """Token ids and image slots of ``prompt`` in order; the text is tokenised segment by segment."""
    layout: Layout = []
    for j, text in enumerate(split_prompt(prompt, num_images)):
        if j > 0:  # image j-1 sits between segment j-1 and segment j
            layout.append(-j)
        if text:
            layout += tokenizer(text, add_special_tokens=False).input_ids
    return layout


def _encode(model: "FrozenModel", images: Sequence[ImageInput]) -> list[torch.Tensor]:
    """All ``images`` in one vision forward pass -> one ``[k, D]`` prefix per image."""
    if not images:
        return []
    return list(model.encode_images(torch.stack([_image_tensor(model, img) for img in images])))


def _embed_layout(model: "FrozenModel", layout: Layout, prefixes: Sequence[torch.Tensor]) -> torch.Tensor:
    """``layout`` -> ``[L, D]``: token runs through the embedding table, image slot i -> ``prefixes[i]``."""
    if not layout:
        raise ValueError("empty prompt: give some text or at least one <image>")
    parts: list[torch.Tensor] = []
    run: list[int] = []
    for item in layout:
        if item >= 0:
            run.append(item)
            continue
        if run:
            parts.append(model.embed_tokens(torch.tensor(run, device=model.device)))
            run = []
        parts.append(prefixes[-item - 1])
    if run:
        parts.append(model.embed_tokens(torch.tensor(run, device=model.device)))
    return torch.cat(parts)


def embed_prompts(
    model: "FrozenModel", images: Sequence[Sequence[ImageInput]] | None, prompts: Sequence[str]
) -> list[torch.Tensor]:
    """One ``[L_i, D]`` embedding sequence per prompt: text tokens and ``[k, D]`` image prefixes in order.

    All images of the batch are encoded in one vision forward pass.
    """
    images = [[] for _ in prompts] if images is None else images
    if len(images) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(images)} image lists; give one list (maybe empty) per prompt")
    layouts = [_layout(model.tokenizer, p, len(imgs)) for p, imgs in zip(prompts, images)]
    prefixes = _encode(model, [img for imgs in images for img in imgs])
    seqs, offset = [], 0
    for layout, imgs in zip(layouts, images):
        seqs.append(_embed_layout(model, layout, prefixes[offset : offset + len(imgs)]))
        offset += len(imgs)
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


def _stop_list(stop_strings: Sequence[str] | str | None) -> list[str]:
    return [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])


_STOP_CRITERIA: "weakref.WeakKeyDictionary[Any, dict[tuple, Any]]" = weakref.WeakKeyDictionary()


def stop_string_criteria(tokenizer: Any, stop_strings: Sequence[str]) -> Any:
    """transformers' ``StopStringCriteria`` for ``stop_strings``, built once per tokenizer.

    Building one scans the whole vocabulary (~0.3 s for SmolLM2's 49k tokens). transformers caches
    that work under a key holding the vocabulary in ``get_vocab()`` order, which a fast tokenizer
    returns differently on every call, so passing ``stop_strings=`` to ``generate`` pays it per call.
    The criterion itself is stateless, so one instance serves every call.
    """
    from transformers import StopStringCriteria

    per_tokenizer = _STOP_CRITERIA.setdefault(tokenizer, {})
    key = (tuple(stop_strings), len(tokenizer))  # added tokens change the vocabulary
    if key not in per_tokenizer:
        per_tokenizer[key] = StopStringCriteria(tokenizer, list(stop_strings))
    return per_tokenizer[key]


@torch.no_grad()
def _no_eos_before(logits: torch.Tensor, step: int, min_new_tokens: int, eos_id: int) -> torch.Tensor:
    """EOS is not a candidate for the first ``min_new_tokens`` tokens (transformers' min_new_tokens)."""
    if step < min_new_tokens:
        logits = logits.clone()
        logits[:, eos_id] = -float("inf")
    return logits


def greedy_uncached(lm, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, eos_id: int, pad_id: int,
                    min_new_tokens: int = 0) -> torch.Tensor:
    """Reference greedy decoding without a KV cache: the full sequence is re-run at every step.

    Returns new token ids ``[B, <=max_new_tokens]``, ``pad_id`` after a sequence's EOS.
    """
    embed = lm.get_input_embeddings()
    out_ids = []
    done = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    for step in range(max_new_tokens):
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding does not shift positions
        logits = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False).logits
        next_ids = _no_eos_before(logits[:, -1], step, min_new_tokens, eos_id).argmax(-1)  # [B]
        next_ids = torch.where(done, torch.full_like(next_ids, pad_id), next_ids)
        out_ids.append(next_ids)
        done |= next_ids == eos_id
        if done.all():
            break
        embeds = torch.cat([embeds, embed(next_ids)[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return torch.stack(out_ids, dim=1)


def _last_logits_only(lm) -> dict[str, int]:
    # Only the last position's logits are needed: skip the [B, L, V] LM-head product where supported.
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.forward).parameters else {}


@torch.no_grad()
def greedy_cached(
    lm,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: Any,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    *,
    stop_strings: Sequence[str] = (),
    tokenizer: Any = None,
    min_new_tokens: int = 0,
) -> torch.Tensor:
    """Greedy decoding that continues a KV ``cache`` (a transformers ``Cache``, updated in place).

    ``embeds [B, L, D]`` are the new inputs after the cached ones, ``mask [B, C + L]`` covers cache
    and inputs (zeros anywhere mark padding), ``position_ids [B, L]`` are the inputs' positions;
    generated tokens take the positions after each row's last one. A row stops at EOS or, given a
    ``tokenizer``, where transformers' ``generate`` stops it for ``stop_strings`` (the same criterion on
    the generated ids). Returns ids ``[B, <=max_new_tokens]``, ``pad_id`` after a row has stopped.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    stopper = stop_string_criteria(tokenizer, stop_strings) if stop_strings and tokenizer is not None else None
    embed = lm.get_input_embeddings()
    keep = _last_logits_only(lm)
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, past_key_values=cache, use_cache=True, **keep)
    next_pos = position_ids[:, -1:] + 1  # [B, 1]
    done = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    out_ids: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        next_ids = _no_eos_before(out.logits[:, -1], step, min_new_tokens, eos_id).argmax(-1)  # [B]
        next_ids = torch.where(done, torch.full_like(next_ids, pad_id), next_ids)
        out_ids.append(next_ids)
        done |= next_ids == eos_id
        if stopper is not None:
            done |= stopper(torch.stack(out_ids, dim=1), None).to(done.device)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = lm(inputs_embeds=embed(next_ids)[:, None], attention_mask=mask, position_ids=next_pos,
                 past_key_values=cache, use_cache=True, **keep)
        next_pos = next_pos + 1
    return torch.stack(out_ids, dim=1)


@torch.no_grad()
def generate(
    model: "FrozenModel",
    images: Sequence[Sequence[ImageInput]] | None,
    prompts: Sequence[str] | str,
    *,
    max_new_tokens: int = 20,
    num_beams: int = 1,
    stop_strings: Sequence[str] | str | None = None,
    batch_size: int | None = None,
    use_cache: bool = True,
    min_new_tokens: int = 0,
    **generate_kwargs: Any,
) -> list[str]:
    """See :meth:`frozen.model.FrozenModel.generate`."""
    if isinstance(prompts, str):
        prompts, images = [prompts], None if images is None else [images]  # one prompt, one image list
    stops = _stop_list(stop_strings)
    if not use_cache and num_beams != 1:
        raise ValueError("use_cache=False is the greedy reference path; use num_beams=1 with it")
    tok = model.tokenizer
    # The same criterion transformers builds from stop_strings=..., built once (see stop_string_criteria).
    stopping: dict[str, Any] = {}
    if stops:
        from transformers import StoppingCriteriaList

        stopping["stopping_criteria"] = StoppingCriteriaList(
            [*generate_kwargs.pop("stopping_criteria", []), stop_string_criteria(tok, stops)]
        )
    if min_new_tokens > 0:
        generate_kwargs["min_new_tokens"] = min_new_tokens
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
                    **generate_kwargs,
                    **stopping,
                )
            else:
                ids = greedy_uncached(model.lm, embeds, mask, max_new_tokens, tok.eos_token_id, tok.pad_token_id,
                                      min_new_tokens=min_new_tokens)
            texts += [trim(t, stops) for t in tok.batch_decode(ids, skip_special_tokens=True)]
    finally:
        model.train(was_training)
    return texts


def _common_prefix(a: Layout, b: Layout) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@torch.no_grad()
def generate_shared(
    model: "FrozenModel",
    support_images: Sequence[ImageInput] | None,
    support_prompt: str,
    query_images: Sequence[Sequence[ImageInput]] | None,
    query_prompts: Sequence[str],
    *,
    max_new_tokens: int = 20,
    stop_strings: Sequence[str] | str | None = None,
    batch_size: int | None = None,
    min_new_tokens: int = 0,
) -> list[str]:
    """Greedy answers to ``support_prompt + query_prompts[i]``, encoding the shared support once.

    Returns exactly ``generate(model, [support_images + query_images[i]], [support_prompt +
    query_prompts[i]], max_new_tokens=..., stop_strings=..., batch_size=...)`` (greedy), but the
    support's images go through the vision encoder once and its embeddings through the LM once
    (batch 1); each batch of ``batch_size`` queries starts from a copy of that KV cache.

    The shared part is the longest prefix of the support's tokens that every full prompt starts
    with: where the tokenizer merges text across the support/query boundary, those last tokens
    are computed per query, so the result never depends on where the prompt was split.
    """
    if isinstance(query_prompts, str):
        raise TypeError("query_prompts must be a list of strings, one per query")
    support = list(support_images or [])
    queries = [[] for _ in query_prompts] if query_images is None else [list(q) for q in query_images]
    if len(queries) != len(query_prompts):
        raise ValueError(f"got {len(query_prompts)} query prompts but {len(queries)} image lists; give one list (maybe empty) per query")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not query_prompts:
        return []
    stops = _stop_list(stop_strings)
    tok = model.tokenizer
    support_layout = _layout(tok, support_prompt, len(support))
    fulls = [_layout(tok, support_prompt + q, len(support) + len(imgs)) for q, imgs in zip(query_prompts, queries)]
    # Each query keeps >= 1 own position: its last logits come from the query pass.
    shared = min(min(_common_prefix(support_layout, full), len(full) - 1) for full in fulls)
    if shared <= 0:  # nothing to share: the plain path is the same computation
        return generate(model, [support + imgs for imgs in queries], [support_prompt + q for q in query_prompts],
                        max_new_tokens=max_new_tokens, stop_strings=stops, batch_size=batch_size,
                        min_new_tokens=min_new_tokens)
    lm, device = model.lm, model.device
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        from transformers import DynamicCache

        support_prefixes = _encode(model, support)  # n_s x [k, D]
        head = _embed_layout(model, support_layout[:shared], support_prefixes)  # [S, D]
        s = head.shape[0]
        cache = DynamicCache(config=lm.config)
        lm(inputs_embeds=head[None], attention_mask=torch.ones(1, s, dtype=torch.long, device=device),
           position_ids=torch.arange(s, device=device)[None], past_key_values=cache, use_cache=True,
           **_last_logits_only(lm))
        support_kv = [(layer.keys, layer.values) for layer in cache.layers]  # [1, H, S, d_head] each
        step = batch_size or len(query_prompts)
        for start in range(0, len(query_prompts), step):
            chunk = range(start, min(start + step, len(query_prompts)))
            query_prefixes = _encode(model, [img for i in chunk for img in queries[i]])
            seqs, offset = [], 0
            for i in chunk:
                own = support_prefixes + query_prefixes[offset : offset + len(queries[i])]  # image index -> prefix
                offset += len(queries[i])
                seqs.append(_embed_layout(model, fulls[i][shared:], own))
            embeds, query_mask = left_pad(seqs)  # [B, Lq, D], [B, Lq]
            b = embeds.shape[0]
            # Padding sits between support and query; every row's first real token is at position S.
            position_ids = s + (query_mask.cumsum(-1) - 1).clamp(min=0)  # [B, Lq]
            mask = torch.cat([query_mask.new_ones(b, s), query_mask], dim=1)  # [B, S + Lq]
            # expand() is a view; the cache's first update concatenates, so support_kv is never written.
            batch_cache = DynamicCache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in support_kv],
                                       config=lm.config)
            ids = greedy_cached(lm, embeds, mask, position_ids, batch_cache, max_new_tokens, tok.eos_token_id,
                                tok.pad_token_id, stop_strings=stops, tokenizer=tok, min_new_tokens=min_new_tokens)
            texts += [trim(t, stops) for t in tok.batch_decode(ids, skip_special_tokens=True)]
    finally:
        model.train(was_training)
    return texts
