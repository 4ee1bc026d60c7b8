"""Generation from interleaved image/text prompts: the options, plain generation, shared-support reuse.

:func:`generate` embeds each :class:`~frozen.model.prompts.Prompt` (image prefixes and tokens in
order), left-pads a batch and decodes through transformers' ``generate`` (greedy, beam search, stop
strings, KV cache) on ``inputs_embeds``; position ids follow the attention mask, so a batched prompt
decodes exactly as it does alone. ``use_cache=False`` runs the uncached greedy reference instead.

:func:`generate_shared` answers many queries that share one prompt prefix (a few-shot support set):
the prefix goes through the LM once (batch 1), its KV cache is copied to each batch of queries, and
only the query suffixes and the answers are computed per query. Its output equals :func:`generate`
on the concatenated prompts.

Every option is declared once, in :class:`GenerationOptions`; ``FrozenModel.generate`` and
``generate_shared`` forward their keyword arguments here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from frozen.model.decoding import greedy_cached, greedy_uncached, last_logits_only, stop_string_criteria, trim
from frozen.model.embedding import (
    ImageInput,
    PrefixModel,
    check_prompts,
    embed_layout,
    embed_tokenized,
    encode,
    left_pad,
)
from frozen.model.prompts import Layout, Prompt

__all__ = ["GenerationOptions", "decode", "decode_shared", "generate", "generate_shared", "shared_length"]


@dataclass(frozen=True, kw_only=True)
class GenerationOptions:
    """How answers are decoded: the keyword arguments of ``generate`` and ``generate_shared``.

    - ``max_new_tokens``: the most tokens an answer gets (>= 1).
    - ``num_beams``: 1 decodes greedily; more runs beam search (``generate`` only) and returns the best beam.
    - ``stop_strings``: a string or strings; decoding of a row stops once one appears, and the answer is
      cut at the earliest one (removed) and stripped.
    - ``batch_size``: prompts (or queries) decoded together; ``None`` puts all in one batch.
    - ``use_cache``: ``False`` runs the uncached greedy reference (slow; ``generate`` only).
    - ``min_new_tokens``: EOS cannot end an answer before this many tokens.
    - ``extra``: any other keyword goes to transformers' ``generate`` unchanged (``generate`` only),
      e.g. ``repetition_penalty``.
    """

    max_new_tokens: int = 20
    num_beams: int = 1
    stop_strings: tuple[str, ...] = ()
    batch_size: int | None = None
    use_cache: bool = True
    min_new_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stops = self.stop_strings
        object.__setattr__(self, "stop_strings", (stops,) if isinstance(stops, str) else tuple(stops or ()))
        bounds = [("max_new_tokens", self.max_new_tokens, 1), ("num_beams", self.num_beams, 1),
                  ("min_new_tokens", self.min_new_tokens, 0), ("batch_size", self.batch_size, 1)]
        problems = [f"{name} must be >= {low}, got {value}" for name, value, low in bounds
                    if value is not None and value < low]
        if not self.use_cache and self.num_beams != 1:
            problems.append("use_cache=False is the greedy reference path; use num_beams=1 with it")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def of(cls, options: GenerationOptions | None = None, **kwargs: Any) -> GenerationOptions:
        """``options`` (default: the defaults) with ``kwargs`` applied; keywords that are not fields go to
        ``extra``, added to the ``extra`` of ``options``."""
        if options is not None and not isinstance(options, GenerationOptions):
            raise TypeError(f"options must be a GenerationOptions, got {type(options).__name__}; "
                            "pass decoding settings as keywords (max_new_tokens=...)")
        base = options or cls()
        extra = {**base.extra, **kwargs.pop("extra", {})}
        names = {f.name for f in dataclasses.fields(cls)}
        extra.update({k: v for k, v in kwargs.items() if k not in names})
        return dataclasses.replace(base, **{k: v for k, v in kwargs.items() if k in names}, extra=extra)


def as_prompts(images: Sequence[Sequence[ImageInput]] | None, prompts: Sequence[str | Prompt]) -> list[Prompt]:
    """Prompts as data: strings with one image list each (``images=None``: no images), or ``Prompt`` objects."""
    if isinstance(prompts, (str, Prompt)):
        raise TypeError("prompts must be a list: one string (or Prompt) per prompt")
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(images)} image lists; "
                         "give one list (maybe empty) per prompt")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, Prompt):
            if images is not None and len(images[i]):
                raise ValueError("a Prompt carries its own images; pass images=None with Prompt objects")
            out.append(p)
        else:
            out.append(Prompt.parse(p, None if images is None else images[i]))
    return out


@contextmanager
def _eval_mode(model: PrefixModel) -> Iterator[None]:
    """Dropout off while generating; the caller's train/eval mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _chunks(n: int, size: int | None) -> Iterator[range]:
    step = size or max(n, 1)
    return (range(start, min(start + step, n)) for start in range(0, n, step))


def generate(model: PrefixModel, images: Sequence[Sequence[ImageInput]] | Sequence[ImageInput] | None,
             prompts: Sequence[str | Prompt] | str | Prompt, options: GenerationOptions | None = None,
             **kwargs: Any) -> list[str]:
    """Answers to interleaved prompts: ``prompts[i]`` has one ``<image>`` marker per image in ``images[i]``.

    Also accepts ``Prompt`` objects (with ``images=None``) and a single prompt with its image list.
    Keyword arguments: see :class:`GenerationOptions`. Returns the generated text only, stripped.
    """
    if isinstance(prompts, (str, Prompt)):  # one prompt, one image list
        prompts, images = [prompts], None if images is None else [images]
    return decode(model, as_prompts(images, prompts), GenerationOptions.of(options, **kwargs))


def decode(model: PrefixModel, prompts: Sequence[Prompt], options: GenerationOptions) -> list[str]:
    """:func:`generate` on ready prompts: tokenised once, embedded and decoded ``options.batch_size`` at a time."""
    tok, o = model.tokenizer, options
    hf_kwargs = dict(o.extra)
    if o.stop_strings:  # the criterion transformers builds from stop_strings=..., built once
        from transformers import StoppingCriteriaList

        hf_kwargs["stopping_criteria"] = StoppingCriteriaList(
            [*hf_kwargs.pop("stopping_criteria", []), stop_string_criteria(tok, o.stop_strings)])
    if o.min_new_tokens > 0:
        hf_kwargs["min_new_tokens"] = o.min_new_tokens
    tokenized = [p.tokenize(tok) for p in prompts]
    check_prompts(model, tokenized, o.max_new_tokens)
    texts: list[str] = []
    with _eval_mode(model):
        for chunk in _chunks(len(prompts), o.batch_size):
            embeds, mask = left_pad(embed_tokenized(model, [tokenized[i] for i in chunk]))
            if o.use_cache:
                ids = model.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=o.max_new_tokens,
                                        num_beams=o.num_beams, do_sample=False, pad_token_id=tok.pad_token_id,
                                        eos_token_id=tok.eos_token_id, **hf_kwargs)
            else:
                ids = greedy_uncached(model.lm, embeds, mask, o.max_new_tokens, tok.eos_token_id, tok.pad_token_id,
                                      min_new_tokens=o.min_new_tokens)
            texts += [trim(t, o.stop_strings) for t in tok.batch_decode(ids, skip_special_tokens=True)]
    return texts


def generate_shared(model: PrefixModel, support_images: Sequence[ImageInput] | None, support_prompt: str | Prompt,
                    query_images: Sequence[Sequence[ImageInput]] | None, query_prompts: Sequence[str | Prompt],
                    options: GenerationOptions | None = None, **kwargs: Any) -> list[str]:
    """Greedy answers to ``support_prompt + query_prompts[i]``, encoding the shared support once.

    The same answers as ``generate(model, [support_images + query_images[i]], [support_prompt +
    query_prompts[i]], ...)``, but the support's images go through the vision encoder once and its
    embeddings through the LM once (batch 1); each batch of ``batch_size`` queries starts from a copy
    of that KV cache. ``support_prompt`` and ``query_prompts`` may be ``Prompt`` objects (their image
    arguments then ``None``). Keyword arguments: see :class:`GenerationOptions` (greedy, cached).
    """
    if isinstance(support_prompt, Prompt):
        if support_images:
            raise ValueError("a Prompt carries its own images; pass support_images=None with a Prompt")
        support = support_prompt
    else:
        support = Prompt.parse(support_prompt, support_images)
    queries = as_prompts(query_images, query_prompts)
    return decode_shared(model, support, queries, GenerationOptions.of(options, **kwargs))


def shared_length(support: Layout, fulls: Sequence[Layout]) -> int:
    """How many leading layout entries (tokens or images) all ``fulls`` share with ``support``.

    Where the support ends in text and a query starts with text, the full prompt tokenises the two
    as one string, and a BPE tokenizer may merge across the seam: support ``"... This is a "`` ends
    with the token ``" "``, but support + query ``"... This is a dax"`` has ``" dax"`` there. A cache
    built from the support's own last tokens would then feed the LM a sequence that no full prompt
    has. Only that seam segment can differ (every other segment is tokenised on its own, see
    ``TokenizedPrompt.join``), so the shared part is the support up to its first entry that differs
    from any full prompt; the tokens after it are computed per query. Each query also keeps at least
    one entry of its own: the first answer token comes from the query pass's last logits.
    """
    def common(a: Layout, b: Layout) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    return min(min(common(support, full), len(full) - 1) for full in fulls)


def decode_shared(model: PrefixModel, support: Prompt, queries: Sequence[Prompt],
                  options: GenerationOptions) -> list[str]:
    """:func:`generate_shared` on ready prompts: the support is tokenised once, each query's seam once."""
    o = options
    if o.num_beams != 1 or not o.use_cache or o.extra:
        raise ValueError("generate_shared decodes greedily with its own KV cache: use generate() for num_beams, "
                         f"use_cache=False or transformers options ({', '.join(sorted(o.extra)) or 'none given'})")
    if not queries:
        return []
    tok, lm, device = model.tokenizer, model.lm, model.device
    support_tok = support.tokenize(tok)
    fulls = [support_tok.join(q.tokenize(tok), tok) for q in queries]
    check_prompts(model, fulls, o.max_new_tokens)
    layouts = [full.layout() for full in fulls]
    s_items = shared_length(support_tok.layout(), layouts)
    if s_items <= 0:  # nothing to share: the plain path is the same computation
        return decode(model, [full.prompt for full in fulls], o)
    texts: list[str] = []
    with _eval_mode(model):
        from transformers import DynamicCache

        support_prefixes = encode(model, support.images)  # n_s x [k, D]
        head = embed_layout(model, layouts[0][:s_items], support_prefixes)  # [S, D]
        s = head.shape[0]
        cache = DynamicCache(config=lm.config)
        lm(inputs_embeds=head[None], attention_mask=torch.ones(1, s, dtype=torch.long, device=device),
           position_ids=torch.arange(s, device=device)[None], past_key_values=cache, use_cache=True,
           **last_logits_only(lm))
        support_kv = [(layer.keys, layer.values) for layer in cache.layers]  # [1, H, S, d_head] each
        for chunk in _chunks(len(queries), o.batch_size):
            query_prefixes = iter(encode(model, [img for i in chunk for img in queries[i].images]))
            # image index in the full prompt -> prefix: the support's, then this query's own
            seqs = [embed_layout(model, layouts[i][s_items:],
                                 support_prefixes + [next(query_prefixes) for _ in queries[i].images]) for i in chunk]
            embeds, query_mask = left_pad(seqs)  # [B, Lq, D], [B, Lq]
            b = embeds.shape[0]
            # Padding sits between support and query; every row's first real token is at position S.
            position_ids = s + (query_mask.cumsum(-1) - 1).clamp(min=0)  # [B, Lq]
            mask = torch.cat([query_mask.new_ones(b, s), query_mask], dim=1)  # [B, S + Lq]
            # expand() is a view; the cache's first update concatenates, so support_kv is never written.
            batch_cache = DynamicCache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in support_kv],
                                       config=lm.config)
            ids = greedy_cached(lm, embeds, mask, position_ids, batch_cache, o.max_new_tokens, tok.eos_token_id,
                                tok.pad_token_id, stop_strings=o.stop_strings, tokenizer=tok,
                                min_new_tokens=o.min_new_tokens)
            texts += [trim(t, o.stop_strings) for t in tok.batch_decode(ids, skip_special_tokens=True)]
    return texts
