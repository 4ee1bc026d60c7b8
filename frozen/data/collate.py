"""Tokenise prompt + target and collate examples into a padded training batch.

The token layout per example is ``prompt ids + target ids + [eos]`` with no BOS (the visual prefix
precedes the text in the model). Labels equal ``input_ids`` except ``-100`` on prompt tokens and
padding; the EOS stays a target so the model learns to stop. Masks are built from lengths, never
from the pad id, so padding with the EOS id (GPT-2 has no pad token) cannot mask a real EOS.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from frozen.core.text import unicode_problem
from frozen.data.samples import Example
from frozen.errors import FrozenConfigError, InputError

IGNORE_INDEX = -100  # label value ignored by torch.nn.functional.cross_entropy


class Collator:
    """``Collator(tokenizer, max_length)(examples) -> batch dict`` (see :meth:`__call__`).

    Picklable (the tokenizer is a HF fast tokenizer), so it runs inside DataLoader workers.
    """

    def __init__(self, tokenizer: Any, max_length: int):
        if tokenizer.eos_token_id is None:
            raise FrozenConfigError("the tokenizer has no eos_token; set tokenizer.eos_token before building the data")
        if max_length < 1:  # the final EOS must fit: a smaller slice would keep tokens past the end
            raise FrozenConfigError(f"max_length must be >= 1 (room for the final EOS), got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.eos_id: int = tokenizer.eos_token_id
        # GPT-2 style tokenizers have no pad token: pad with EOS; the mask/labels come from lengths.
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens; ``""`` -> ``[]`` (batch call for speed)."""
        nonempty = [i for i, t in enumerate(texts) if t]
        out: list[list[int]] = [[] for _ in texts]
        if nonempty:
            encoded = self.tokenizer([texts[i] for i in nonempty], add_special_tokens=False)["input_ids"]
            for i, ids in zip(nonempty, encoded):
                out[i] = list(ids)
        return out

    def encode(self, prompt_ids: list[int], target_ids: list[int]) -> tuple[list[int], list[int], bool]:
        """``(input_ids, labels, truncated)`` for one example, at most ``max_length`` long.

        Truncation drops tokens from the end of prompt+target but always keeps the final EOS
        (as input and as label), so a truncated example still ends with a stop target.
        """
        ids = prompt_ids + target_ids + [self.eos_id]
        labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids + [self.eos_id]
        truncated = len(ids) > self.max_length
        if truncated:
            ids = ids[: self.max_length - 1] + [self.eos_id]
            labels = labels[: self.max_length - 1] + [self.eos_id]
        return ids, labels, truncated

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        """Collate decoded examples (``image`` already a tensor ``[3, S, S]``).

        Returns:
            images: ``[B, 3, S, S]`` as the examples hold them (training uint8, evaluation float in [0, 1])
            input_ids: long ``[B, T]``, right-padded with ``pad_id``; T = longest sequence <= max_length
            attention_mask: long ``[B, T]``, 1 on real tokens (EOS included), 0 on padding
            labels: long ``[B, T]``, input_ids with -100 on prompt tokens and padding
            keys, kinds, prompts, targets: list[str] of length B; texts: prompt + target (no EOS)
            meta: list[dict] (the sample json; captions samples add ``captions``)
            num_truncated: int, examples cut to max_length in this batch
            num_text_tokens: int, real text tokens (prompt + target + EOS, no padding) in this batch
            num_targets: int, label positions that are not -100 (the caption-token loss's count)
        """
        rows = self.encode_examples(examples)
        width = max(len(ids) for ids, _, _ in rows)
        batch_size = len(rows)
        input_ids = torch.full((batch_size, width), self.pad_id, dtype=torch.long)
        labels = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (ids, lab, _) in enumerate(rows):
            n = len(ids)
            input_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
            labels[i, :n] = torch.tensor(lab, dtype=torch.long)
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                **example_fields(examples, rows)}

    def encode_examples(self, examples: Sequence[Example]) -> list[tuple[list[int], list[int], bool]]:
        """:meth:`encode` of each example's prompt and target (checked to be valid Unicode first)."""
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        for e in examples:  # the tokenizer would fail with a TypeError
            for field, text in (("prompt", e.prompt), ("target", e.target)):
                problem = unicode_problem(text)
                if problem:
                    raise InputError(f"example {e.key}: its {field} is not valid Unicode ({problem}): {text[:80]!r}")
        prompts = self._ids([e.prompt for e in examples])
        targets = self._ids([e.target for e in examples])
        return [self.encode(p, t) for p, t in zip(prompts, targets)]


def example_fields(examples: Sequence[Example], rows: Sequence[tuple[list[int], list[int], bool]]) -> dict[str, Any]:
    """The per-example fields and counts every collated batch carries (padded or packed), in example order."""
    return {
        "images": torch.stack([e.image for e in examples]),
        "keys": [e.key for e in examples],
        "kinds": [e.kind for e in examples],
        "prompts": [e.prompt for e in examples],
        "targets": [e.target for e in examples],
        "texts": [e.prompt + e.target for e in examples],
        "meta": [e.meta for e in examples],
        "num_truncated": sum(int(t) for _, _, t in rows),
        "num_text_tokens": sum(len(ids) for ids, _, _ in rows),
        # The loss's normaliser, counted here on the host so the training step never reads it off a tensor.
        "num_targets": sum(sum(label != IGNORE_INDEX for label in labels) for _, labels, _ in rows),
    }


def lm_positions(batch: dict[str, Any], num_prefix_tokens: int) -> tuple[int, int]:
    """``(real, computed)``: LM positions of a collated batch that hold data, and all it computes.

    A padded batch of ``B`` rows of width ``T`` runs ``B * (k + T)`` positions through the LM, of which
    ``k`` prefix positions per image and ``num_text_tokens`` are real; the rest is padding. A packed
    batch (``position_ids`` present, :mod:`frozen.data.packing`) already holds the prefix slots in its
    ``R`` rows of width ``W``: it computes ``R * W``. The training log's padding fraction is ``1 - real / computed``.
    """
    rows, width = batch["input_ids"].shape
    real = batch["num_text_tokens"] + num_prefix_tokens * len(batch["images"])
    if "position_ids" in batch:  # packed: the prefix slots are inside the rows
        return real, rows * width
    return real, rows * (num_prefix_tokens + width)


__all__ = ["Collator", "IGNORE_INDEX", "example_fields", "lm_positions"]
