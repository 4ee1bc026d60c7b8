"""Training rows where the visual prefix is not only at position 0: interleaved pairs, lead text, text before images.

The paper trains ``[k prefix slots][caption][EOS]``: the prefix only ever sits at position 0, and a
few-shot prompt, which puts its query image after text, then reads the image much worse. Three data
options move the prefix (each a key of :class:`~frozen.config.DataConfig`):

* ``data.interleave=true``: several image-text pairs share one row and ONE causal context::

      [slots 0][prompt 0][target 0][EOS][slots 1][prompt 1][target 1][EOS] ... [padding]

  positions run 0, 1, ... over the whole row (padding included, so the row is one sequence), every
  target and EOS is a label, and each image's ``k`` slots open its pair, so later pairs see the earlier
  ones and images sit at every position. Rows hold at most ``max_length + k`` positions (plus what a
  separator longer than one token adds) and are filled
  first-fit decreasing (:func:`~frozen.data.packing.first_fit_decreasing`, deterministic); within a row the
  pairs keep the batch's (shuffled) order. ``data.interleave_separator`` (e.g. ``"\\n"``, what few-shot
  prompts put between demonstrations) replaces the EOS of every pair but the row's last, still a target.
* ``data.lead_text``: a fixed text before every image's slots (not a target); evaluation must put it
  before the image too.
* ``data.text_before_image=p``: with probability ``p`` a pair gets another example's text-only line
  (``"Q: .. A: ..\\n"``, a question of the batch where there is one) before its slots, not a target.
  The draw is seeded by the batch's keys, so it repeats exactly on resume.

Without ``interleave`` each pair is a row of its own. Text before the slots is cut from its start
when a pair would not fit in ``max_length + k`` positions. The batch is the packed batch of
:mod:`frozen.data.packing` (``position_ids``, ``prefix_index``, no ``attention_mask``), so the model's
packed forward writes the prefixes into their slots; since positions never restart inside a row,
transformers' mask is the plain causal one.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import torch

from frozen.config import uses_slot_layout
from frozen.data.collate import IGNORE_INDEX, Collator, example_fields
from frozen.data.packing import collator_for, first_fit_decreasing
from frozen.data.samples import Example
from frozen.errors import FrozenConfigError


class InterleavedCollator(Collator):
    """``InterleavedCollator(tokenizer, max_length, k, interleave=..., ...)(examples) -> packed batch dict``."""

    def __init__(self, tokenizer: Any, max_length: int, num_prefix_tokens: int, *, interleave: bool = True,
                 separator: str = "", lead_text: str = "", text_before_image: float = 0.0):
        super().__init__(tokenizer, max_length)
        if num_prefix_tokens < 1:
            raise FrozenConfigError(
                f"interleaving needs num_prefix_tokens >= 1 (the prefix slots), got {num_prefix_tokens}")
        self.k = num_prefix_tokens
        self.row_length = max_length + num_prefix_tokens
        self.interleave = interleave
        self.separator_ids = self._ids([separator])[0]
        self.lead_ids = self._ids([lead_text])[0]
        if len(self.lead_ids) + 2 > max_length:  # one text token + EOS must still fit after it
            raise FrozenConfigError(f"data.lead_text is {len(self.lead_ids)} tokens, too long for data.max_length="
                                    f"{max_length}; shorten it or raise data.max_length")
        self.text_before_image = text_before_image

    def _before(self, examples: Sequence[Example]) -> list[list[int]]:
        """Token ids before each example's slots: another example's text line (sometimes), then the lead text."""
        lines = [""] * len(examples)
        if self.text_before_image > 0 and len(examples) > 1:
            rng = random.Random("|".join(e.key for e in examples))  # the batch's own seed: exact on resume
            for i in range(len(examples)):
                if rng.random() < self.text_before_image:
                    others = [j for j, e in enumerate(examples) if j != i and e.kind == "vqa"]
                    j = rng.choice(others or [j for j in range(len(examples)) if j != i])
                    lines[i] = (examples[j].prompt + examples[j].target).strip() + "\n"
        return [ids + self.lead_ids for ids in self._ids(lines)]

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        """Lay out decoded examples (``image`` a tensor ``[3, S, S]``) in rows.

        Returns the fields of :class:`~frozen.data.collate.Collator` (``images [N, 3, S, S]`` and the
        per-example lists in example order, ``num_truncated``, ``num_text_tokens`` counting the text
        before the slots too) without ``attention_mask``, and:
            input_ids: long ``[R, W]``; prefix slots and padding hold ``pad_id``
            labels: long ``[R, W]``; -100 on text before the slots, prefix slots, prompts and padding
            position_ids: long ``[R, W]``; 0 .. W-1 in every row (one context per row)
            prefix_index: long ``[N, k]``; flat positions (``row * W + column``) of example i's prefix slots
        """
        rows = self.encode_examples(examples)
        k, extra = self.k, max(len(self.separator_ids) - 1, 0)  # a separator may be longer than the EOS it replaces
        before = []
        for pre, (ids, _, _) in zip(self._before(examples), rows):
            room = self.row_length - k - len(ids)
            before.append(pre[len(pre) - room:] if len(pre) > room else pre)  # keep the end next to the image
        lengths = [len(pre) + k + len(ids) + extra for pre, (ids, _, _) in zip(before, rows)]
        if self.interleave:
            bins = [sorted(b) for b in first_fit_decreasing(lengths, self.row_length + extra)]  # pairs in batch order
        else:
            bins = [[i] for i in range(len(rows))]
        segments: list[list[tuple[int, list[int], list[int]]]] = []  # per row: (example, input ids, labels)
        for b in bins:
            row = []
            for n, i in enumerate(b):
                ids, lab, _ = rows[i]
                if self.separator_ids and n < len(b) - 1:  # the separator replaces the EOS (still a target)
                    ids, lab = ids[:-1] + self.separator_ids, lab[:-1] + self.separator_ids
                pre = before[i]
                row.append((i, pre + [self.pad_id] * k + ids, [IGNORE_INDEX] * (len(pre) + k) + lab))
            segments.append(row)
        width = max(sum(len(ids) for _, ids, _ in row) for row in segments)
        input_ids = torch.full((len(bins), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(bins), width), IGNORE_INDEX, dtype=torch.long)
        prefix_index = torch.zeros((len(rows), k), dtype=torch.long)
        for r, row in enumerate(segments):
            start = 0
            for i, ids, lab in row:
                input_ids[r, start : start + len(ids)] = torch.tensor(ids, dtype=torch.long)
                labels[r, start : start + len(ids)] = torch.tensor(lab, dtype=torch.long)
                prefix_index[i] = r * width + start + len(before[i]) + torch.arange(k)
                start += len(ids)
        position_ids = torch.arange(width).expand(len(bins), width).clone()  # never restarts: one context per row
        fields = example_fields(examples, rows)
        fields["num_text_tokens"] += sum(len(pre) for pre in before)
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "prefix_index": prefix_index,
                **fields}


def train_collator(cfg: Any, tokenizer: Any, num_prefix_tokens: int | None) -> Collator:
    """The training collator of data config ``cfg``: interleaved/slotted, packed or padded."""
    setting = uses_slot_layout(cfg)
    if setting is None:
        return collator_for(tokenizer, cfg.max_length, cfg.packing, num_prefix_tokens)
    if num_prefix_tokens is None:
        raise FrozenConfigError(f"{setting} needs the model's num_prefix_tokens to lay out the prefix slots")
    return InterleavedCollator(tokenizer, cfg.max_length, num_prefix_tokens, interleave=cfg.interleave,
                               separator=cfg.interleave_separator, lead_text=cfg.lead_text,
                               text_before_image=cfg.text_before_image)


__all__ = ["InterleavedCollator", "train_collator", "uses_slot_layout"]
