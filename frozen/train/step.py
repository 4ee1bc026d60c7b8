"""One optimizer step, written once: the training loop calls it every step and ``scripts/bench.py`` times it.

A step takes ``accum`` micro-batches of this process (each ``images [B_micro, 3, S, S]`` and
``input_ids / attention_mask / labels [B_micro, T]``, or a packed batch, :mod:`frozen.data.packing`): the loss
of each is its summed caption-token cross-entropy divided by the number of target tokens of the
whole global batch (all ranks, all micro-steps), so N processes of batch b compute the same update
as one process of batch N*b.
Backward runs under ``no_sync`` on every micro-step but the last (one gradient all-reduce per step),
then gradients are unscaled (fp16), clipped, and the optimizer steps unless the loss or gradient is
not finite (the caller counts those and stops a run that keeps failing).

The step never waits for the device (docs/host_syncs.md): the target count comes from the collator as
a Python int (all-reduced as a device tensor when distributed), and a non-finite step is skipped on
the device: the fused optimizer (:func:`adamw`, the default on accelerators) reads the flag ``found_inf``
inside its kernel, as it does for fp16's GradScaler, and leaves weights, moments and step count untouched.
The caller reads the flag later, with the loss, on a logging step. Unfused (the default on CPU), the step
reads the flag itself: on a CPU that read waits for nothing.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from frozen.core import dist
from frozen.data.packing import PACKED_KEYS


@dataclass
class StepResult:
    loss: torch.Tensor  # scalar fp32: the global mean caption-token loss of this step (all ranks)
    grad_norm: torch.Tensor  # scalar: global gradient norm before clipping (0 when clipping is off)
    nonfinite: torch.Tensor  # scalar bool: the loss or gradient was not finite and the optimizer did not step
    # (fp16: the scaler decides, it skips steps with inf gradients and lowers its scale)


def supports_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` skips its update on device when given ``optimizer.found_inf`` (fused kernels).
    Read from the param groups: loading a state dict of a non-fused optimizer turns ``fused`` off."""
    return all(group.get("fused") for group in optimizer.param_groups)


def adamw(params: Sequence[torch.nn.Parameter], fused: bool | None = None, **kwargs: Any) -> torch.optim.AdamW:
    """AdamW; fused (``trainer.fused_optimizer``) its kernel takes the non-finite flag as a tensor, so
    :func:`train_step` skips a bad step without reading it. ``None``: fused on an accelerator (the host must run
    ahead of it); unfused on CPU, where reading the flag costs no wait and the unfused kernel's rounding keeps
    CPU results as they were (fused AdamW differs from it in the last bit)."""
    devices = {p.device.type for p in params}
    if fused is None:
        fused = bool(devices) and "cpu" not in devices
    supported = set(_get_fused_kernels_supported_devices())
    if fused and not (devices <= supported and all(p.is_floating_point() for p in params)):
        raise ValueError(f"trainer.fused_optimizer=true: torch has no fused AdamW for {sorted(devices - supported)}; "
                         "set it to null (auto) or false")
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


def target_count(batch: dict[str, Any]) -> int:
    """Target tokens of a collated batch: the collator's ``num_targets``, else counted from its labels (host
    tensors from a loader; counting labels on an accelerator would wait for it)."""
    if "num_targets" in batch:
        return int(batch["num_targets"])
    return int((batch["labels"] != -100).sum())


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    micro_batches: Sequence[dict[str, Any]],
    *,
    device: torch.device,
    autocast: AbstractContextManager | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float = 1.0,
    world_size: int = 1,
    blind: bool = False,
) -> StepResult:
    """One optimizer step over this process's ``micro_batches`` (see the module docstring).

    ``model`` is what to call: a FrozenModel, or its DistributedDataParallel wrapper when
    ``world_size > 1`` (its ``no_sync`` skips the all-reduce on accumulation micro-steps). ``blind``
    replaces every image by zeros (the paper's train-blind ablation). Gradients are zeroed after
    the step (``set_to_none``).
    """
    autocast = autocast if autocast is not None else nullcontext()
    scaler = scaler if scaler is not None else torch.amp.GradScaler(device.type, enabled=False)
    # Normalise by the global number of target tokens so that the update is independent of how the
    # batch is split over processes and micro-steps.
    num_targets = sum(target_count(b) for b in micro_batches)
    global_targets: int | torch.Tensor = max(num_targets, 1)
    if world_size > 1:  # the global count stays on the device: the forward is queued without waiting for it
        global_targets = dist.all_reduce_sum(torch.tensor(num_targets, device=device)).clamp_min(1)
    loss_sum = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        images = batch["images"].to(device, non_blocking=True)
        if blind:
            images = torch.zeros_like(images)  # train-blind ablation: no visual information
        sync = i == len(micro_batches) - 1 or world_size == 1
        mask = batch.get("attention_mask")  # None in a packed batch: its segments come from position_ids
        packed = {key: batch[key].to(device) for key in PACKED_KEYS if key in batch}
        with nullcontext() if sync else model.no_sync(), autocast:
            out = model(
                images,
                batch["input_ids"].to(device),
                None if mask is None else mask.to(device),
                labels=batch["labels"].to(device),
                num_items_in_batch=global_targets,
                **packed,
            )
        # out.loss = (this micro-batch's summed CE) / global_targets; DDP averages gradients over
        # ranks, so scale by world size to get the gradient of the global mean.
        scaler.scale(out.loss * world_size).backward()
        loss_sum += out.loss.detach().float()

    grad_norm = torch.zeros((), device=device)
    if grad_clip > 0 or scaler.is_enabled():
        scaler.unscale_(optimizer)
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    global_loss = dist.all_reduce_sum(loss_sum.clone())  # sum of per-rank shares = global mean
    nonfinite = torch.isfinite(global_loss).logical_and(torch.isfinite(grad_norm)).logical_not()  # [] bool
    if scaler.is_enabled():  # fp16: the scaler skips inf steps and lowers its scale
        scaler.step(optimizer)
        scaler.update()
    elif supports_found_inf(optimizer):  # skipped inside the kernel: weights, moments and step count unchanged
        optimizer.found_inf = nonfinite.float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bool(nonfinite):  # an optimizer without found_inf: the host reads the flag (waits for the device)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss=global_loss, grad_norm=grad_norm, nonfinite=nonfinite)
