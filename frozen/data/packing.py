"""Caption packing (``data.packing=true``): several examples share one LM row, none computes padding.

Each example becomes one *segment* ``[k prefix slots][prompt][caption][EOS]`` of ``k + n`` positions
(``n`` <= ``max_length`` text tokens, as :class:`~frozen.data.collate.Collator` encodes them). Segments
are packed first-fit decreasing (longest first, ties in example order: deterministic) into rows of
at most ``max_length + k`` positions, so the longest possible segment always fits in one row. The
batch is as wide as its fullest row; what is left of a row is one padding segment.

``position_ids`` restart at 0 in every segment. Given ``position_ids`` and no attention mask,
transformers' ``create_causal_mask`` finds the segment boundaries (``find_packed_sequence_indices``)
and lets each position attend only to earlier positions of its own segment (eager, sdpa and flex
attention; :func:`frozen.model.lm.packing_problem` lists what is refused). The model writes the
``k`` prefix embeddings of example ``i`` into its slots (``prefix_index[i]``). Labels are -100 on
the prefix slots, prompts and padding, so a segment's first position is never a target and the
LM's shift never predicts one segment from the one before it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from frozen.data.collate import IGNORE_INDEX, Collator, example_fields
from frozen.data.samples import Example
from frozen.errors import FrozenConfigError

PACKED_KEYS = ("position_ids", "prefix_index")  # the model inputs a packed batch adds (and attention_mask goes)


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into bins of total at most ``capacity``: each item, longest first
    (ties: lower index first), goes to the first bin with room, else to a new one. Deterministic."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        if lengths[i] > capacity:
            raise ValueError(f"item {i} of length {lengths[i]} exceeds the bin capacity {capacity}")
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


class PackedCollator(Collator):
    """``PackedCollator(tokenizer, max_length, num_prefix_tokens)(examples) -> packed batch dict``."""

    def __init__(self, tokenizer: Any, max_length: int, num_prefix_tokens: int):
        super().__init__(tokenizer, max_length)
        if num_prefix_tokens < 1:
            raise FrozenConfigError(f"packing needs num_prefix_tokens >= 1 (the prefix slots), got {num_prefix_tokens}")
        self.num_prefix_tokens = num_prefix_tokens
        self.row_length = max_length + num_prefix_tokens

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        """Pack decoded examples (``image`` a tensor ``[3, S, S]``) into rows.

        Returns the fields of :class:`~frozen.data.collate.Collator` (``images [N, 3, S, S]`` and the
        per-example lists in example order, ``num_truncated``, ``num_text_tokens``) without
        ``attention_mask``, and:
            input_ids: long ``[R, W]``; prefix slots and padding hold ``pad_id``
            labels: long ``[R, W]``; -100 on prefix slots, prompt tokens and padding
            position_ids: long ``[R, W]``; 0, 1, ... within each segment (and the padding segment)
            prefix_index: long ``[N, k]``; flat positions (``row * W + column``) of example i's prefix slots
        """
        rows = self.encode_examples(examples)
        k = self.num_prefix_tokens
        lengths = [k + len(ids) for ids, _, _ in rows]
        bins = first_fit_decreasing(lengths, self.row_length)
        width = max(sum(lengths[i] for i in b) for b in bins)
        input_ids = torch.full((len(bins), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(bins), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(bins), width), dtype=torch.long)
        prefix_index = torch.zeros((len(rows), k), dtype=torch.long)
        for r, b in enumerate(bins):
            start = 0
            for i in b:
                ids, lab, _ = rows[i]
                text = slice(start + k, start + lengths[i])
                input_ids[r, text] = torch.tensor(ids, dtype=torch.long)
                labels[r, text] = torch.tensor(lab, dtype=torch.long)
                position_ids[r, start : start + lengths[i]] = torch.arange(lengths[i])
                prefix_index[i] = r * width + start + torch.arange(k)
                start += lengths[i]
            position_ids[r, start:] = torch.arange(width - start)  # the padding: a segment of its own
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "prefix_index": prefix_index,
                **example_fields(examples, rows)}


def collator_for(tokenizer: Any, max_length: int, packing: bool, num_prefix_tokens: int | None) -> Collator:
    """The training collator: :class:`PackedCollator` when ``packing`` (needs ``num_prefix_tokens``), else padded."""
    if not packing:
        return Collator(tokenizer, max_length)
    if num_prefix_tokens is None:
        raise FrozenConfigError("data.packing=true needs the model's num_prefix_tokens to lay out the prefix slots")
    return PackedCollator(tokenizer, max_length, num_prefix_tokens)


__all__ = ["PACKED_KEYS", "PackedCollator", "collator_for", "first_fit_decreasing"]
