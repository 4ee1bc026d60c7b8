"""What every bench entry shares: the entry names, model loading, and how a side and a target are reported."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

from frozen.core.tiny import save_tiny_lm
from frozen.model.frozen_model import FrozenModel

ENTRIES = (
    "train_step", "fewshot_shared_support", "batched_generation", "data_loader", "jpeg_decode", "train_packing",
    "train_compiled",
)
DEFAULT_LM = "smollm2-135m-instruct-gguf"
STOPS = ["\n"]  # what the evaluation harness stops generation at


def resolve_lm(args: argparse.Namespace, workdir: Path) -> str:
    if args.lm != "tiny":
        return args.lm
    return str(save_tiny_lm(workdir / "tiny_gpt2", "gpt2"))


def load_model(args: argparse.Namespace, lm: str, **extra: Any):
    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(
        lm, vision=args.backbone, image_size=args.image_size, num_prefix_tokens=2, **extra
    )
    return model.to(torch.device(args.device))


def load_generation_model(args: argparse.Namespace, lm: str):
    """``--load``'s trained export, else a fresh model (random vision + mapper) around ``lm``."""
    if args.load:
        return FrozenModel.from_pretrained(args.load).to(torch.device(args.device)).eval()
    return load_model(args, lm).eval()


def generation_config(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """The settings both generation entries report (model, decoding, machine)."""
    cfg = model.model_cfg
    return {
        "lm": args.lm if not args.load else model.lm_cfg.name,
        "load": args.load,
        "backbone": cfg.vision,
        "image_size": cfg.image_size,
        "trained": bool(args.load),
        "max_new_tokens": args.max_new_tokens,
        "stop_strings": STOPS,
        "dtype": "float32",
        "device": args.device,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_config(args: Any, bf16: bool, **entry: Any) -> dict[str, Any]:
    """An entry's ``config``: the LM, backbone and image size, the entry's own settings, then precision,
    device, threads and repeats (the fields every train-step entry reports)."""
    return {
        "lm": args.lm, "backbone": args.backbone, "image_size": args.image_size, **entry,
        "lm_dtype": "bfloat16" if bf16 else "float32", "autocast": "bf16" if bf16 else "none",
        "device": args.device, "threads": torch.get_num_threads(), "repeats": args.repeats,
    }


def side(what: str, values: list[float], unit: str = "s") -> dict[str, Any]:
    return {"what": what, "median": median(values), "unit": unit, "values": values}


def target(metric: str, op: str, bound: float, value: float) -> dict[str, Any]:
    met = value <= bound if op == "<=" else value < bound if op == "<" else value >= bound
    return {"metric": metric, "target": f"{op} {bound:g}", "value": value, "met": bool(met)}
