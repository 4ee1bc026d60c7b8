"""lmms-eval, the parts that need no lmms-eval: the offline easy-VQA task's data and functions, and what
the registered ``frozen`` model does with lmms-eval's requests (``frozen.eval.lmms_model`` wraps these).

The offline task (``lmms_tasks/frozen_easyvqa``) reads ``data/lmms_easyvqa/test.jsonl``, which
:func:`write_easyvqa_dataset` writes from our easy-VQA shards: the test questions in shard order
(the order ``evaluate.py`` reads them, so ``--limit N`` is our ``max_examples=N``), each with its
image's PNG bytes unchanged (base64) and its ten answers. Its prompt is our VQA template
(:data:`VQA_PROMPT`, ``<image>`` first) and its metric our official VQA accuracy.

Requests: an lmms-eval context with one ``<image>`` marker per visual keeps its layout; a context
without markers gets the visuals first (our harness's ``<image>Q: ... A:``). Generation is greedy
(``until`` -> stop strings, ``max_new_tokens``); a log-likelihood is the summed log-probability of
the continuation's tokens after the context and images, tokenised the way lm-eval does (trailing
spaces of the context move to the continuation; the continuation's tokens are those of
context + continuation past the context's own).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from frozen.config import SampleTextConfig, VqaTaskConfig
from frozen.data.samples import decode_image, iter_shard, parse_sample
from frozen.data.shards import resolve_shards
from frozen.errors import DataError, InputError
from frozen.eval.answer import postprocess
from frozen.eval.metrics import vqa_accuracy
from frozen.eval.vqa import answers_of
from frozen.model.embedding import check_context, embed_layout, encode
from frozen.model.generation import GenerationOptions
from frozen.model.prompts import IMAGE_MARKER, Prompt, render
from frozen.prep.easyvqa import COLORS, SHAPES

VQA_PROMPT = VqaTaskConfig.prompt  # "Q: {question} A:", the harness's VQA query template
EASYVQA_SHARDS = "easyvqa/vqa-test-*.tar"
DATASET_FILE = "lmms_easyvqa/test.jsonl"  # under data_root; the task YAML names data/lmms_easyvqa/test.jsonl
CHOICES = ("yes", "no", *COLORS, *SHAPES)  # every easy-VQA answer: the multiple-choice task's options


# ------------------------------------------------------------------------------------------------
# The offline task: data and the functions its YAML names


def write_easyvqa_dataset(out: str | Path, *, data_root: str = "data", shards: str = EASYVQA_SHARDS) -> int:
    """Every answered question of ``shards`` as one JSON line (shard order); returns the count."""
    rows, counts = [], Counter()
    for url in resolve_shards(shards, data_root):
        for key, files in iter_shard(url, counts):
            ex = parse_sample(key, files, SampleTextConfig(), url=url, require_answer=False)
            if isinstance(ex, str):
                continue  # bad data: evaluate.py skips it too
            decode_image(ex.image)  # a corrupt image is skipped by evaluate.py; here it raises
            answers = answers_of(ex.meta)
            if answers is None:
                raise DataError(f"{key} in {url} has no answers; the lmms-eval task needs an answered split "
                                f"(make shards writes one)")
            rows.append({"id": str(ex.meta.get("question_id", key)), "question": ex.meta["question"],
                         "answers": answers, "answer_type": ex.meta.get("answer_type"),
                         "answer_index": CHOICES.index(answers[0]) if answers[0] in CHOICES else -1,
                         "image": base64.b64encode(ex.image).decode("ascii")})
    if not rows:
        raise DataError(f"no questions in shards={shards} under data_root={data_root}; run make shards")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    return [decode_image(base64.b64decode(doc["image"]))]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    return render(VQA_PROMPT, question=doc["question"])


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    return list(CHOICES)


def process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    """Our harness's score of one answer: :func:`postprocess` then the official VQA accuracy."""
    return {"vqa_accuracy": vqa_accuracy(postprocess(results[0], None), doc["answers"])}


# ------------------------------------------------------------------------------------------------
# The model side of lmms-eval's requests


def interleave(context: str, visuals: Sequence[Any] | None) -> Prompt:
    """lmms-eval's context and visuals as a :class:`Prompt`: its own ``<image>`` markers when it has
    one per visual, else the visuals first and then the text."""
    visuals = [v for v in (visuals or []) if v is not None]
    for v in visuals:
        if not isinstance(v, (Image.Image, torch.Tensor)):
            raise InputError(f"the frozen model takes images only, got a {type(v).__name__} visual; "
                             "evaluate it on image tasks")
    markers = context.count(IMAGE_MARKER)
    if markers == 0:
        context = IMAGE_MARKER * len(visuals) + context
    elif markers != len(visuals):
        raise InputError(f"the context has {markers} {IMAGE_MARKER} marker(s) for {len(visuals)} image(s); "
                         f"give one marker per image or none (the images then come first)")
    return Prompt.parse(context, visuals)


def generation_options(gen_kwargs: dict[str, Any] | None, *, max_new_tokens: int,
                       batch_size: int | None) -> GenerationOptions:
    """A task's ``generation_kwargs`` as greedy :class:`GenerationOptions` (``until`` -> stop strings).
    Sampling settings (``temperature``, ``top_p``, ``do_sample``) are ignored: answers are greedy."""
    kw = dict(gen_kwargs or {})
    until = kw.get("until") or []
    return GenerationOptions(max_new_tokens=int(kw.get("max_new_tokens") or max_new_tokens),
                             num_beams=int(kw.get("num_beams") or 1),
                             stop_strings=tuple([until] if isinstance(until, str) else until), batch_size=batch_size)


def continuation_ids(model: Any, context: Prompt, continuation: str) -> tuple[Prompt, list[int], list[int]]:
    """``(context, its layout, the continuation's token ids)``, split the way lm-eval splits them."""
    text = context.texts[-1]
    spaces = len(text) - len(text.rstrip(" "))
    if spaces:
        continuation = text[-spaces:] + continuation
        context = Prompt(context.texts[:-1] + (text[:-spaces],), context.images)
    tok = model.tokenizer
    ctx = context.tokenize(tok)
    whole = Prompt(context.texts[:-1] + (context.texts[-1] + continuation,), context.images).tokenize(tok)
    cont = list(whole.ids[-1][len(ctx.ids[-1]):])
    if not cont:
        raise InputError(f"the continuation {continuation!r} adds no token to its context")
    layout = ctx.layout()
    if not layout:  # nothing to condition on: start from the tokenizer's BOS (or EOS), as lm-eval does
        layout = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
    check_context(model, [whole], 0)
    return context, layout, cont


@torch.no_grad()
def loglikelihoods(model: Any, requests: Sequence[tuple[Prompt, str]],
                   batch_size: int = 1) -> list[tuple[float, bool]]:
    """``(sum of log p(continuation tokens | context and images), whether greedy decoding gives them)``
    per ``(context, continuation)``, ``batch_size`` at a time. Sequences are right-padded, so every
    real token keeps the positions and the attention it has alone (padding only ever follows it)."""
    out: list[tuple[float, bool]] = []
    for start in range(0, len(requests), max(1, batch_size)):
        chunk = [continuation_ids(model, ctx, cont) for ctx, cont in requests[start:start + max(1, batch_size)]]
        prefixes = encode(model, [img for ctx, _, _ in chunk for img in ctx.images])
        seqs, offset = [], 0
        for ctx, layout, cont in chunk:
            seqs.append(embed_layout(model, layout + cont, prefixes[offset:offset + ctx.num_images]))
            offset += ctx.num_images
        longest = max(len(s) for s in seqs)
        embeds = seqs[0].new_zeros(len(seqs), longest, seqs[0].shape[-1])
        mask = torch.zeros(len(seqs), longest, dtype=torch.long, device=embeds.device)
        for i, seq in enumerate(seqs):
            embeds[i, :len(seq)], mask[i, :len(seq)] = seq, 1
        logits = model.lm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        for i, (_, _, cont) in enumerate(chunk):
            end = len(seqs[i])
            logprobs = torch.log_softmax(logits[i, end - len(cont) - 1:end - 1].float(), dim=-1)
            target = torch.tensor(cont, device=logprobs.device)
            total = logprobs.gather(1, target[:, None]).sum().item()
            out.append((float(total), bool((logprobs.argmax(-1) == target).all())))
    return out


def loglikelihood(model: Any, context: Prompt, continuation: str) -> tuple[float, bool]:
    """:func:`loglikelihoods` of one request."""
    return loglikelihoods(model, [(context, continuation)])[0]
