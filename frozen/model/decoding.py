"""Decoding loops on ``inputs_embeds``: greedy with a KV cache (continuing any cache), the uncached
greedy reference, stop strings, and trimming.

Beam search and batched greedy decoding of whole prompts go through transformers' ``generate``
(see :mod:`frozen.model.generation`); :func:`greedy_cached` serves the shared-support path, whose
cache starts from a prefix computed once, and :func:`greedy_uncached` is the reference both are
tested against. Position ids follow the attention mask, so left padding does not shift positions.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from typing import Any

import torch


def trim(text: str, stop_strings: Sequence[str]) -> str:
    """Cut at the earliest stop string (removed) and strip whitespace."""
    cut = len(text)
    for stop in stop_strings:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut].strip()


_STOP_CRITERIA: weakref.WeakKeyDictionary[Any, dict[tuple, Any]] = weakref.WeakKeyDictionary()


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


def _no_eos_before(logits: torch.Tensor, step: int, min_new_tokens: int, eos_id: int) -> torch.Tensor:
    """EOS is not a candidate for the first ``min_new_tokens`` tokens (transformers' min_new_tokens)."""
    if step < min_new_tokens:
        logits = logits.clone()
        logits[:, eos_id] = -float("inf")
    return logits


@torch.no_grad()
def greedy_uncached(lm, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, eos_id: int, pad_id: int,
                    min_new_tokens: int = 0) -> torch.Tensor:
    """Reference greedy decoding without a KV cache: the full sequence is re-run at every step.

    ``embeds [B, L, D]``, ``mask [B, L]`` (left padding). Returns new token ids
    ``[B, <=max_new_tokens]``, ``pad_id`` after a sequence's EOS.
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


def last_logits_only(lm) -> dict[str, int]:
    """``{"logits_to_keep": 1}`` where ``lm`` supports it: only the last position's logits are needed,
    so the ``[B, L, V]`` LM-head product is skipped."""
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
    keep = last_logits_only(lm)
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
             use_cache=True, **keep)
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
