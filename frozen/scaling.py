"""The scaling plan (docs/scaling.md): memory per GPU and time per step under ddp and fsdp, computed.

LM parameter counts and shapes from the models' published configs, the bench's FLOPs-per-step formula
(``frozen.train.flops.analytic_step_flops``) and two numbers measured on CPU (:func:`measure_vision`); every other
input is an assumption stated here and in the rendered document. ``scripts/scaling_plan.py`` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frozen.model.vision import build_vision
from frozen.train.flops import analytic_step_flops, count_flops

GIB = 2**30
GPUS, GPU_GIB, PEAK_TFLOPS = 8, 80, 989.0  # 8 x H100/H200-class 80 GB, dense bf16 peak
MFU = 0.35  # assumed model-FLOPs utilisation of the compute (typical for well-fed bf16 training)
ALLGATHER_GBPS = 350.0  # assumed all-gather bus bandwidth per GPU inside an NVLink node (GB/s)
BATCH, K, CAPTION_TOKENS, IMAGE = 128, 2, 32, 224  # the paper: batch 128, k = 2; captions padded to 32


@dataclass(frozen=True)
class LM:
    name: str
    params: float  # all parameters
    layers: int
    hidden: int
    heads: int
    vocab: int
    tied: bool


LMS = (
    # The paper's 7B LM is not public; a LLaMA-7B-shaped model stands in (same size, 32 x 4096).
    LM("7B (the paper's size; LLaMA-7B shape)", 6.74e9, 32, 4096, 32, 32000, False),
    LM("Llama-3.1-8B", 8.03e9, 32, 4096, 32, 128256, False),
    LM("Llama-3.1-70B", 70.6e9, 80, 8192, 64, 128256, False),
)


def measure_vision() -> tuple[int, int, int]:
    """NF-ResNet-50 at 224 px, one image: (forward FLOPs, fp32 bytes saved for backward, parameters)."""
    torch.manual_seed(0)
    vision = build_vision("nf_resnet50", pretrained=False)
    x = torch.rand(1, 3, IMAGE, IMAGE)
    with torch.no_grad():
        flops = count_flops(lambda: vision(x))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()  # a tensor saved twice counts once
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        vision(x)
    return flops, sum(storages.values()), sum(p.numel() for p in vision.parameters())


def plan(lm: LM, vision_flops: int, vision_act: int, vision_params: int) -> dict[str, dict[str, float]]:
    """Memory per GPU (GiB) and seconds per step for one LM under ddp and fsdp on GPUS GPUs."""
    per_gpu = BATCH // GPUS  # 16 images per GPU, no accumulation
    seq = K + CAPTION_TOKENS
    tokens = BATCH * seq
    n_mapper = (2048 + 1) * K * lm.hidden  # linear: NF-ResNet-50's 2048 features -> k x D, with bias
    embed = lm.vocab * lm.hidden
    n_matmul = lm.params if lm.tied else lm.params - embed  # the input embedding is a lookup
    flops = analytic_step_flops(
        int(n_matmul), tokens, vision_flops * BATCH, n_mapper, BATCH, lm_weight_grads=False
    )
    compute_s = flops / (GPUS * PEAK_TFLOPS * 1e12 * MFU)

    # Trainable encoder + mapper: fp32 weights, gradients and two Adam moments, replicated in both.
    trainable = (vision_params + n_mapper) * 16
    # LM activations kept for backward, bf16 (Korthikanti et al. 2022, no recomputation):
    # s*b*h*(34 + 5*a*s/h) bytes per layer; logits in bf16 plus their fp32 upcast for the loss.
    lm_act = lm.layers * per_gpu * seq * (34 * lm.hidden + 5 * lm.heads * seq)
    logits = per_gpu * seq * lm.vocab * (2 + 4)
    vision_act = per_gpu * vision_act / 2  # measured in fp32; bf16 autocast halves it
    activations = lm_act + logits + vision_act
    weights = 2 * lm.params  # bf16
    layer = (lm.params - embed * (1 if lm.tied else 2)) / lm.layers
    # FSDP2: 1/N of the weights, plus the root unit (embeddings, head) kept unsharded from forward to
    # backward, plus about two gathered layers in flight (the current one and the prefetched next).
    root = 2 * embed * (1 if lm.tied else 2)
    fsdp_weights = weights / GPUS + root + 2 * 2 * layer
    # Each step all-gathers every layer twice (forward, and again for the backward pass); FSDP
    # overlaps that with compute, so the step takes the longer of the two.
    comm_s = 2 * weights * (GPUS - 1) / GPUS / (ALLGATHER_GBPS * 1e9)
    return {
        "ddp": {"weights": weights / GIB, "other": (trainable + activations) / GIB, "step_s": compute_s},
        "fsdp": {
            "weights": fsdp_weights / GIB,
            "other": (trainable + activations) / GIB,
            "step_s": max(compute_s, comm_s),
            "comm_s": comm_s,
        },
        "flops": {"step": flops, "compute_s": compute_s},
    }


def render(vision_flops: int, vision_act: int, vision_params: int) -> str:
    rows = []
    for lm in LMS:
        p = plan(lm, vision_flops, vision_act, vision_params)
        for strategy in ("ddp", "fsdp"):
            s = p[strategy]
            total = s["weights"] + s["other"]
            fits = "yes" if total < GPU_GIB * 0.9 else "**no**"
            bound = (
                "" if strategy == "ddp" else (" (all-gather bound)" if s["comm_s"] > p["flops"]["compute_s"] else "")
            )
            rows.append(
                f"| {lm.name} | {strategy} | {s['weights']:.1f} | {s['other']:.1f} | {total:.1f} | {fits} | "
                f"{p['flops']['step'] / 1e15:.2f} | {s['step_s']:.2f}{bound} |"
            )
    table = "\n".join(rows)
    columns = ["LM", "strategy", "LM weights (GiB/GPU)", "activations + trainable (GiB/GPU)", "total (GiB/GPU)",
               f"fits in {GPU_GIB} GB", "PFLOP/step", "s/step"]
    header = "| " + " | ".join(columns) + " |"
    return f"""# Scaling plan: which strategy for which LM

Generated by `scripts/scaling_plan.py` (do not edit by hand; `--check` in the test suite fails when
this file and the script disagree). These are *computed* numbers for choosing a strategy before
renting machines, not measurements on GPUs.

Setting: the paper's configuration -- global batch {BATCH}, NF-ResNet-50 trained from scratch at
{IMAGE} px, k = {K} prefix tokens, captions padded to {CAPTION_TOKENS} tokens (sequence {K + CAPTION_TOKENS})
-- on {GPUS} x {GPU_GIB} GB GPUs (H100/H200 class, {PEAK_TFLOPS:.0f} TFLOP/s dense bf16), {BATCH // GPUS} images
per GPU, frozen LM in bf16, `trainer.precision=bf16`.

{header}
|---|---|---|---|---|---|---|---|
{table}

**Reading it.** Under `ddp` every GPU holds the whole LM: the 7B and 8B LMs fit with room to
spare, the 70B LM ({2 * LMS[-1].params / 1e9:.0f} GB in bf16) fits on no single GPU. Under `fsdp` each
GPU holds 1/{GPUS} of the LM plus the gathered embeddings/head and about two layers in flight, so the 70B LM trains on
one node; its step is bound by the all-gathers (the whole LM crosses NVLink twice per step),
so `fsdp` costs time where `ddp` fits. Pick `ddp` when the LM fits, `fsdp` when it does not;
`trainer.fsdp_cpu_offload=true` trades more time for less GPU memory beyond that.

## How each number is computed

- **FLOPs per step**: `frozen.train.flops.analytic_step_flops` (the formula `make bench` checks against
  torch's FLOP counter, docs/bench.md): `4 * N_lm * tokens` for the frozen LM (forward plus the
  activation-gradient backward, no weight gradients) with `N_lm` the matmul parameters (an untied
  input embedding is a lookup and excluded) and `tokens = {BATCH} x {K + CAPTION_TOKENS}`, plus `3 x` the vision
  forward FLOPs, plus `6 * N_mapper * B`. Attention-score FLOPs are left out (sequence {K + CAPTION_TOKENS}).
- **NF-ResNet-50** (measured here on CPU by the script, one 224 px image): {vision_flops / 1e9:.2f} GFLOP forward
  (`torch.utils.flop_counter`), {vision_act / 2**20:.0f} MiB saved for backward in fp32 (halved for bf16
  autocast), {vision_params / 1e6:.1f}M parameters.
- **Time per step**: FLOPs / ({GPUS} GPUs x {PEAK_TFLOPS:.0f} TFLOP/s x MFU {MFU}), MFU *assumed*. Under `fsdp`
  the larger of that and the all-gather time `2 x 2 bytes x N x (N_gpu - 1) / N_gpu / {ALLGATHER_GBPS:.0f} GB/s`
  (assumed NVLink all-gather bandwidth; FSDP2 overlaps it with compute by prefetching the next layer).
- **LM weights per GPU**: `2 bytes x N` (ddp); fsdp: `2N / {GPUS}` + the unsharded root unit (input
  embedding and head, kept from forward to backward) + two gathered decoder layers.
- **Activations** (estimate, no activation checkpointing): the LM's saved activations in bf16 from
  Korthikanti et al. 2022, `s*b*h*(34 + 5*a*s/h)` bytes per layer, plus the logits (bf16, and fp32
  for the loss); the vision encoder's measured saved tensors x {BATCH // GPUS} images.
  `trainer.activation_checkpointing=true` cuts the LM term to about one `s*b*h*2` per layer.
- **Trainable**: encoder + mapper in fp32 with gradients and two AdamW moments (16 bytes/parameter),
  replicated under both strategies (see docs/training.md, "Distributed training").
- Not included: the CUDA context and allocator fragmentation (budget 2-5 GB), NCCL buffers.
  "fits" means the total is under 90 % of {GPU_GIB} GB.
- LM shapes: LLaMA-7B (32 layers, 4096 wide, 32k vocabulary) standing in for the paper's unreleased
  7B LM; Llama-3.1-8B and -70B from their published configs.
"""
