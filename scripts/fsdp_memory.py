"""Peak host memory per rank while the LM is loaded: ``ddp`` (every rank loads it) vs ``fsdp``
(all ranks build it on the meta device, rank 0 reads the weights and scatters the shards).

``python scripts/fsdp_memory.py [--lm smollm2-135m-instruct-gguf] [--ranks 2]``: for each strategy,
``--ranks`` gloo processes on CPU each reset the kernel's resident-memory high-water mark after
their imports, build the FrozenModel (``tiny_cnn``), under fsdp shard its LM, and read every LM
weight they hold once (memory-mapped weights count only once touched); each reports its peak
extra resident memory and the LM parameter bytes it holds at the end. Prints one JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from frozen.bench import lib as perf  # noqa: E402


def _measure(strategy: str, lm: str, out_dir: str) -> None:
    import torch

    from frozen.config import LMConfig, ModelConfig
    from frozen.core import dist
    from frozen.model.frozen_model import FrozenModel
    from frozen.train.fsdp import resident_lm_bytes, shard_lm

    info = dist.init("cpu")
    torch.manual_seed(0)
    # Pay the imports (transformers' model classes, the tokenizer) before the baseline.
    FrozenModel(ModelConfig(vision="tiny_cnn", image_size=64), LMConfig(name=lm), lm_on_meta=True)
    dist.barrier()
    base = perf.current_rss_bytes()
    method = "VmHWM after clear_refs" if perf.reset_peak_rss() else "ru_maxrss (not resettable)"
    fsdp = strategy == "fsdp"
    model = FrozenModel(ModelConfig(vision="tiny_cnn", image_size=64), LMConfig(name=lm), lm_on_meta=fsdp)
    if fsdp:
        shard_lm(model, info, "fp32")
    # Read every weight this rank holds once, as training does: safetensors weights are memory-mapped
    # and only count as resident once touched.
    with torch.no_grad():
        for p in model.lm.parameters():
            (p.to_local() if hasattr(p, "to_local") else p).float().sum()
    local, whole = resident_lm_bytes(model.lm)
    result = {
        "rank": info.rank,
        "peak_extra_mib": (perf.peak_rss_bytes() - base) / 2**20,
        "lm_param_mib_held": local / 2**20,
        "lm_param_mib_whole": whole / 2**20,
        "method": method,
    }
    Path(out_dir, f"{strategy}-{info.rank}.json").write_text(json.dumps(result))
    dist.cleanup()


def main(argv: list[str] | None = None) -> dict:
    from frozen.core import dist
    from frozen.model.lm import resolve_lm_path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lm", default="smollm2-135m-instruct-gguf")
    p.add_argument("--ranks", type=int, default=2)
    args = p.parse_args(argv)
    lm = resolve_lm_path(args.lm)  # convert a packaged GGUF once, before the ranks start
    report = {"lm": args.lm, "ranks": args.ranks}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in ("ddp", "fsdp"):
            dist.spawn(_measure, (strategy, lm, tmp), num_local=args.ranks)
            report[strategy] = [json.loads(Path(tmp, f"{strategy}-{r}.json").read_text()) for r in range(args.ranks)]
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
