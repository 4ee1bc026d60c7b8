"""The forward pass of a packed batch (:mod:`frozen.data.packing`): no padding, no hand-written mask.

The ``k`` prefix embeddings of each image are written into its segment's prefix slots; the LM gets
``position_ids`` (restarting at 0 in every segment) and no attention mask, which is transformers'
padding-free path: ``create_causal_mask`` derives the segments from the position ids, so every
position attends only to its own segment. LMs or attention implementations that cannot do this are
refused (:func:`frozen.model.lm.packing_problem`), never run with mixed segments.
"""

from __future__ import annotations

from typing import Any

import torch

from frozen.errors import FrozenConfigError
from frozen.model.lm import packing_problem


def check_packing_support(lm: torch.nn.Module) -> None:
    """Raise :class:`FrozenConfigError` (one line) if ``lm`` as loaded cannot keep packed segments apart."""
    problem = packing_problem(lm.config.model_type, getattr(lm.config, "_attn_implementation", None))
    if problem:
        raise FrozenConfigError(problem)


def packed_forward(
    model: Any,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor,
    prefix_index: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> Any:
    """The LM output (``loss``, ``logits [R, W, V]``) of a packed batch for FrozenModel ``model``.

    ``images [N, 3, S, S]``; ``input_ids / labels / position_ids [R, W]``; ``prefix_index [N, k]``: flat
    positions (``row * W + column``) of image i's prefix slots. The loss is the summed caption-token
    cross-entropy divided by ``num_items_in_batch`` (default: this batch's target count), as in the
    padded path.
    """
    check_packing_support(model.lm)
    device = model.device
    input_ids, labels, position_ids = input_ids.to(device), labels.to(device), position_ids.to(device)
    if position_ids.shape != input_ids.shape or labels.shape != input_ids.shape:
        raise ValueError(f"packed input_ids, labels and position_ids must share one shape [R, W], got "
                         f"{tuple(input_ids.shape)}, {tuple(labels.shape)}, {tuple(position_ids.shape)}")
    prefix = model.encode_images(images)  # [N, k, D]
    n, k, d = prefix.shape
    if tuple(prefix_index.shape) != (n, k):
        raise ValueError(f"prefix_index must be [N, k] = [{n}, {k}], got {tuple(prefix_index.shape)}")
    rows, width = input_ids.shape
    embeds = model.embed_tokens(input_ids)  # [R, W, D]
    flat = embeds.reshape(rows * width, d).index_copy(0, prefix_index.to(device).reshape(-1), prefix.reshape(n * k, d))
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    return model.lm(
        inputs_embeds=flat.view(rows, width, d), position_ids=position_ids, labels=labels, use_cache=False, **extra
    )
