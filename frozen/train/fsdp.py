"""``trainer.strategy=fsdp``: the frozen LM sharded over the ranks with FSDP2 (``fully_shard``).

With DDP every rank holds the whole frozen LM; a 70B LM in bf16 (140 GB) fits on no single GPU.
Here each decoder layer is one FSDP2 unit and the LM as a whole (embeddings, final norm, head) the
root unit: every rank keeps 1/N of each weight and all-gathers one layer at a time for forward and
again for backward (which still has to propagate activation gradients through the LM, down to the
visual prefix). The LM's weights have ``requires_grad=False``, so FSDP reduces no gradients and the
optimizer holds no state for them, exactly as under DDP.

The trainable vision encoder and mapper stay *replicated* under DDP (its ``params_to_ignore`` skips
the LM's sharded parameters): they are small (25M for NF-ResNet-50 against 7B-70B for the LM), so
sharding them would save little memory but cost an all-gather per step and turn their weights,
optimizer state, checkpoints and export into DTensors to be gathered. Replicated, they are the same
tensors under ``ddp`` and ``fsdp``: checkpoints, exact resume and the export (trainable weights only)
do not change, and a run can resume under the other strategy.
"""

from __future__ import annotations

import torch
from torch import nn

from frozen.core.dist import DistInfo
from frozen.errors import FrozenConfigError
from frozen.model.lm import load_lm


def decoder_layers(lm: nn.Module) -> list[nn.Module]:
    """The LM's transformer blocks (transformers marks them as ``GradientCheckpointingLayer``)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in lm.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise FrozenConfigError(
            f"trainer.strategy=fsdp: {type(lm).__name__} has no transformers decoder layers to "
            "shard; use trainer.strategy=ddp for this LM"
        )
    return layers


def shard_lm(model: nn.Module, info: DistInfo, precision: str, cpu_offload: bool = False) -> nn.Module:
    """Shard ``model.lm`` in place over all ranks, move the rest of ``model`` to the device; returns ``model``.

    Loading: every rank built the LM on the meta device (``FrozenModel(lm_on_meta=True)``: nothing
    allocated). After sharding, each rank allocates only its shards; rank 0 reads the weights into
    host memory and scatters each weight's shards (:func:`_scatter_from_rank0`), so only rank 0's
    host memory ever holds the whole LM, and no GPU does.

    Mixed precision is FSDP2's own: parameters all-gathered in bf16/fp16 (``precision``), gradients
    (none for a frozen LM) reduced in fp32. ``cpu_offload`` keeps the shards in host memory between
    uses (very large LMs; CUDA only). The FrozenModel computes the token embeddings before it calls
    the LM, so a forward pre-hook unshards the root unit (embeddings, head) first; the root stays
    unsharded after forward (backward needs it at once) and is resharded after backward.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if cpu_offload and info.device.type != "cuda":
        raise FrozenConfigError(
            "trainer.fsdp_cpu_offload=true offloads GPU shards to the host; on CPU the shards "
            "are in host memory already: set it to false"
        )
    if not all(p.is_meta for p in model.lm.parameters()):
        raise ValueError("shard_lm expects a FrozenModel built with lm_on_meta=True (rank 0 loads the weights here)")
    # Rank 0 reads the weights into host memory only: a full LM never lands on a GPU.
    loaded = load_lm(model.lm_cfg.name, dtype=model.lm_cfg.dtype)[0] if info.is_main else None
    full = {**dict(loaded.named_parameters()), **dict(loaded.named_buffers())} if loaded is not None else {}
    del loaded
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    param_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    kwargs = dict(
        mesh=mesh,
        mp_policy=MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32),
        offload_policy=CPUOffloadPolicy() if cpu_offload else OffloadPolicy(),
    )
    for layer in decoder_layers(model.lm):
        fully_shard(layer, **kwargs)
    fully_shard(model.lm, reshard_after_forward=False, **kwargs)
    home = torch.device("cpu") if cpu_offload else info.device
    model.lm.to_empty(device=home)  # this rank's shards (and buffers), uninitialised
    _scatter_from_rank0(model.lm, full, info)
    del full
    for name, child in model.named_children():
        if name != "lm":
            child.to(info.device)
    model.register_forward_pre_hook(lambda module, args: module.lm.unshard())
    # DDP must neither broadcast nor all-reduce the LM's (sharded) parameters and buffers.
    ignored = [f"lm.{name}" for name, _ in model.lm.named_parameters()]
    ignored += [f"lm.{name}" for name, _ in model.lm.named_buffers()]
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    return model


def _scatter_from_rank0(lm: nn.Module, full: dict[str, torch.Tensor], info: DistInfo) -> None:
    """Fill every rank's shards of the sharded ``lm`` from rank 0's ``full`` parameters and buffers by name.

    One parameter at a time, rank 0 cuts the weight as FSDP2 does (``torch.chunk`` on dim 0, each
    chunk padded to ``ceil(rows / N)`` rows) and scatters the chunks; a rank never holds more than
    its own chunk. ``torch.distributed.checkpoint``'s ``broadcast_from_rank0`` was measured to peak
    at the whole LM on every rank (it broadcasts full tensors), which is what this is meant to avoid.
    Buffers are small and not sharded: broadcast whole (non-persistent ones, e.g. rotary
    frequencies, are in no state dict, hence named_buffers rather than a state dict).
    """
    import torch.distributed as tdist
    from torch.distributed.tensor import DTensor

    world = info.world_size
    with torch.no_grad():
        for name, param in lm.named_parameters():  # a tied weight once
            local = param.to_local() if isinstance(param, DTensor) else param
            rows = -(-param.shape[0] // world)
            recv = torch.empty((rows, *param.shape[1:]), dtype=local.dtype, device=info.device)
            chunks = None
            if info.is_main:
                chunks = [recv.new_zeros(recv.shape) for _ in range(world)]
                for chunk, part in zip(chunks, torch.chunk(full[name], world, dim=0)):
                    chunk[: part.shape[0]].copy_(part)
            tdist.scatter(recv, chunks, src=0)
            local.copy_(recv[: local.shape[0]])
        for name, buffer in lm.named_buffers():
            if info.is_main:
                buffer.copy_(full[name])
            if buffer.device != info.device:  # a CPU-offloaded or CPU-kept buffer crosses via the device
                staged = buffer.to(info.device)
                tdist.broadcast(staged, src=0)
                buffer.copy_(staged)
            else:
                tdist.broadcast(buffer, src=0)


def resident_lm_bytes(lm: nn.Module) -> tuple[int, int]:
    """``(bytes of LM parameter storage this rank holds, bytes of the whole LM)``, read off the tensors:
    a sharded parameter counts its local shard's storage, a tied weight counts once."""
    from torch.distributed.tensor import DTensor

    local = whole = 0
    for p in lm.parameters():  # parameters() yields a tied weight once
        tensor = p.to_local() if isinstance(p, DTensor) else p.data
        local += tensor.untyped_storage().nbytes()
        whole += p.numel() * p.element_size()
    return local, whole
