"""`make bench`: the project's fast paths timed against the plain way of doing the same work.

Entries (``--only`` picks some; see docs/bench.md for what each measures):

* ``train_step``: one optimizer step with the frozen LM (no LM weight gradients) vs the same model
  with the LM's weights left trainable but outside the optimizer; time, peak memory, FLOPs; also
  with activation checkpointing. On CUDA additionally tokens/s and MFU.
* ``fewshot_shared_support``: 25 queries on one 5-way 1-shot support set, support encoded once
  (``generate_shared``) vs the full prompt per query (``model.generate``); outputs must be identical.
* ``batched_generation``: 16 VQA prompts in one ``model.generate`` call vs one call per prompt.
* ``data_loader``: samples/s of the training pipeline alone vs samples/s the train step consumes.

Timings are medians of ``--repeats``; the two sides of an entry run interleaved, so load from other
processes hits both alike. Writes ``outputs/bench/bench.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from frozen import benchlib as perf  # noqa: E402
from frozen.core.precision import autocast_context, resolve_precision  # noqa: E402
from frozen.train.step import train_step  # noqa: E402  (the loop's own step)

ENTRIES = ("train_step", "fewshot_shared_support", "batched_generation", "data_loader")
DEFAULT_LM = "smollm2-135m-instruct-gguf"
STOPS = ["\n"]  # what the evaluation harness stops generation at


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--lm", default=DEFAULT_LM, help="LM name or path; 'tiny' writes a random 2-layer GPT-2 on the fly")
    p.add_argument("--backbone", default="tiny_cnn", help="vision backbone of every entry")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per side; medians are reported")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(ENTRIES)}")
    p.add_argument("--out", default="outputs/bench/bench.json")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--gen-batch", type=int, default=16, help="batch size of both sides of fewshot_shared_support")
    p.add_argument("--queries", type=int, default=25, help="queries of fewshot_shared_support")
    p.add_argument("--prompts", type=int, default=16, help="prompts of batched_generation")
    p.add_argument("--max-new-tokens", type=int, default=10)
    p.add_argument("--data-root", default="data")
    p.add_argument("--shards", default="easyvqa/captions-train-*.tar")
    p.add_argument("--loader-batches", type=int, default=20, help="batches timed per data_loader repeat")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses (CPU)")
    p.add_argument(
        "--load",
        default=None,
        help="a trained Frozen export for the generation entries (real answers; "
        "its vision/image size apply there); default: the LM + a randomly initialised --backbone",
    )
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="accelerator peak for MFU (default: table by GPU name)"
    )
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: one variant, one subprocess
    args = p.parse_args(argv)
    args.only = [e for e in args.only.split(",") if e] or list(ENTRIES)
    unknown = set(args.only) - set(ENTRIES)
    if unknown:
        p.error(f"unknown entries {sorted(unknown)}; choose from {', '.join(ENTRIES)}")
    return args


def resolve_lm(args: argparse.Namespace, workdir: Path) -> str:
    if args.lm != "tiny":
        return args.lm
    from frozen.core.tiny import save_tiny_lm  # the offline random LMs of the test suite

    return str(save_tiny_lm(workdir / "tiny_gpt2", "gpt2"))


def load_model(args: argparse.Namespace, lm: str, **extra: Any):
    from frozen import FrozenModel

    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(
        lm, vision=args.backbone, image_size=args.image_size, num_prefix_tokens=2, **extra
    )
    return model.to(torch.device(args.device))


def load_generation_model(args: argparse.Namespace, lm: str):
    """``--load``'s trained export, else a fresh model (random vision + mapper) around ``lm``."""
    from frozen import FrozenModel

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


def side(what: str, values: list[float], unit: str = "s") -> dict[str, Any]:
    return {"what": what, "median": median(values), "unit": unit, "values": values}


def target(metric: str, op: str, bound: float, value: float) -> dict[str, Any]:
    met = value <= bound if op == "<=" else value < bound if op == "<" else value >= bound
    return {"metric": metric, "target": f"{op} {bound:g}", "value": value, "met": bool(met)}


# ------------------------------------------------------------------------------------------ train step
TRAIN_VARIANTS = ("frozen", "plain", "frozen_ckpt")


def _train_setup(
    args: argparse.Namespace, lm: str
) -> tuple[Any, dict[str, Any], Callable[[str], None], Callable[[], None], Any, bool]:
    """Model, synthetic batch, ``configure(variant)``, ``step()``, autocast context, bf16 flag."""
    device = torch.device(args.device)
    bf16 = resolve_precision("auto", device) == "bf16"  # native bf16 hardware; else fp32 throughout
    model = load_model(args, lm, lm_dtype="bfloat16" if bf16 else "float32")
    model.train()
    batch = perf.synthetic_caption_batch(model.tokenizer, args.train_batch, args.image_size)
    params = model.trainable_parameters()  # vision + mapper: the optimizer never sees LM weights
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95))
    autocast = autocast_context("bf16" if bf16 else "fp32", device)

    def configure(variant: str) -> None:
        model.enable_activation_checkpointing(variant == "frozen_ckpt")
        perf.set_lm_weight_grads(model, variant == "plain")

    def step() -> None:
        train_step(model, optimizer, params, [batch], device=device, autocast=autocast, grad_clip=1.0)

    return model, batch, configure, step, autocast, bf16


def memory_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Subprocess side: extra peak memory of two train steps of one variant over the loaded model."""
    model, batch, configure, step, autocast, _ = _train_setup(args, args.lm)
    configure(args.memory_probe)
    device = torch.device(args.device)
    # Weights loaded from safetensors may be memory-mapped and paged in on first use: touch them all
    # with an inference forward first, so the baseline below already holds the model.
    with torch.no_grad(), autocast:
        model(batch["images"].to(device), batch["input_ids"].to(device), batch["attention_mask"].to(device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step(), step()
        return {
            "peak_extra_bytes": torch.cuda.max_memory_allocated(device) - base,
            "method": "cuda.max_memory_allocated",
        }
    base = perf.current_rss_bytes()
    resettable = perf.reset_peak_rss()
    step(), step()
    return {
        "peak_extra_bytes": perf.peak_rss_bytes() - base,
        "method": "VmHWM after clear_refs" if resettable else "ru_maxrss (not resettable)",
    }


def _run_memory_probe(args: argparse.Namespace, lm: str, variant: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-probe",
        variant,
        "--lm",
        lm,
        "--device",
        args.device,
        "--backbone",
        args.backbone,
        "--image-size",
        str(args.image_size),
        "--train-batch",
        str(args.train_batch),
        "--threads",
        str(args.threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {variant} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_train_step(args: argparse.Namespace, lm: str) -> dict[str, Any]:
    device = torch.device(args.device)
    model, batch, configure, step, autocast, bf16 = _train_setup(args, lm)
    inputs = (batch["images"].to(device), batch["input_ids"].to(device), batch["attention_mask"].to(device))

    def forward() -> None:  # the forward of a train step (graph built, then dropped)
        with autocast:
            model(*inputs, labels=batch["labels"].to(device)).loss.detach()

    fns: dict[str, perf.Timed] = {v: (lambda v=v: configure(v), step) for v in TRAIN_VARIANTS}
    fns.update({f"{v}_forward": (lambda v=v: configure(v), forward) for v in ("frozen", "plain")})
    times = perf.interleaved(fns, args.repeats, device)
    med = {name: median(values) for name, values in times.items()}

    # FLOPs: counted by torch's FlopCounterMode (one step each) and by the documented formula.
    configure("frozen")
    counted = {"forward": perf.count_flops(forward), "frozen_step": perf.count_flops(step)}
    configure("plain")
    counted["plain_step"] = perf.count_flops(step)
    configure("frozen")
    with torch.no_grad():
        vision_flops = perf.count_flops(lambda: model.vision(inputs[0]))
    seq = model.num_prefix_tokens + batch["input_ids"].shape[1]
    tokens = args.train_batch * seq
    n_lm, n_mapper = perf.lm_matmul_params(model.lm), sum(p.numel() for p in model.mapper.parameters())
    analytic = {
        v: perf.analytic_step_flops(n_lm, tokens, vision_flops, n_mapper, args.train_batch, v == "plain")
        for v in ("frozen", "plain")
    }

    entry: dict[str, Any] = {
        "config": {
            "lm": args.lm,
            "backbone": args.backbone,
            "image_size": args.image_size,
            "k": model.num_prefix_tokens,
            "batch": args.train_batch,
            "seq_len": seq,
            "caption_tokens": int(batch["attention_mask"].sum(1).float().mean()),
            "lm_dtype": "bfloat16" if bf16 else "float32",
            "autocast": "bf16" if bf16 else "none",
            "native_bf16": bf16,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
        },
        "project": side("frozen LM (requires_grad=False): one optimizer step", times["frozen"]),
        "baseline": side("LM weights requires_grad=True, not in the optimizer", times["plain"]),
        "ratio": med["frozen"] / med["plain"],
        "speedup": med["plain"] / med["frozen"],
        "activation_checkpointing": {
            **side("frozen LM + activation checkpointing", times["frozen_ckpt"]),
            "ratio_to_frozen": med["frozen_ckpt"] / med["frozen"],
        },
        "forward_s": {"frozen": med["frozen_forward"], "plain": med["plain_forward"]},
        "step_over_forward": {
            "frozen": med["frozen"] / med["frozen_forward"],
            "plain": med["plain"] / med["plain_forward"],
        },
        "flops": {
            "counted": counted,
            "counted_step_over_forward": {v: counted[f"{v}_step"] / counted["forward"] for v in ("frozen", "plain")},
            "analytic": analytic,
            "lm_matmul_params": n_lm,
            "vision_forward_flops": vision_flops,
        },
        "tokens_per_s": tokens / med["frozen"],
    }
    peak = perf.peak_tflops(device, args.peak_tflops)
    if peak:
        entry["mfu"] = {
            "frozen": analytic["frozen"] / med["frozen"] / (peak * 1e12),
            "plain": analytic["plain"] / med["plain"] / (peak * 1e12),
            "peak_tflops": peak,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "override",
        }
    entry["targets"] = [target("time_ratio", "<=", 0.75, entry["ratio"])]
    if not args.no_memory:
        mem = {v: _run_memory_probe(args, lm, v) for v in TRAIN_VARIANTS}
        grad_bytes = sum(p.numel() * p.element_size() for p in model.lm.parameters())
        entry["memory"] = {
            **{f"{v}_peak_extra_mb": mem[v]["peak_extra_bytes"] / 2**20 for v in mem},
            "ratio": mem["frozen"]["peak_extra_bytes"] / mem["plain"]["peak_extra_bytes"],
            "ckpt_ratio_to_frozen": mem["frozen_ckpt"]["peak_extra_bytes"] / mem["frozen"]["peak_extra_bytes"],
            "lm_weight_grad_mb": grad_bytes / 2**20,
            "method": mem["frozen"]["method"],
        }
        entry["targets"].append(target("peak_memory_ratio", "<", 1.0, entry["memory"]["ratio"]))
    return entry


# ------------------------------------------------------------------------------------------ generation
def bench_fewshot(args: argparse.Namespace, lm: str) -> dict[str, Any]:
    from frozen.model.generation import generate_shared

    model = load_generation_model(args, lm)
    support_images, support_prompt, query_images, query_prompts = perf.fewshot_inputs(args.queries)
    full_images = [support_images + q for q in query_images]
    full_prompts = [support_prompt + q for q in query_prompts]

    def measure(
        batch: int, max_new_tokens: int = args.max_new_tokens
    ) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
        kw = {"max_new_tokens": max_new_tokens, "stop_strings": STOPS, "batch_size": batch}
        outputs: dict[str, list[str]] = {}

        def shared() -> None:
            outputs["shared"] = generate_shared(
                model, support_images, support_prompt, query_images, query_prompts, **kw
            )

        def full() -> None:
            outputs["full"] = model.generate(full_images, full_prompts, **kw)

        return perf.interleaved({"shared": shared, "full": full}, args.repeats, torch.device(args.device)), outputs

    times, outputs = measure(args.gen_batch)
    speedup = median(times["full"]) / median(times["shared"])
    entry = {
        "config": {
            **generation_config(args, model),
            "ways": 5,
            "shots": 1,
            "task_induction": True,
            "queries": len(query_prompts),
            "batch": args.gen_batch,
        },
        "project": side("generate_shared: support KV cache reused", times["shared"]),
        "baseline": side("model.generate on the full prompt per query", times["full"]),
        "ratio": 1 / speedup,
        "speedup": speedup,
        "identical": outputs["shared"] == outputs["full"],
        "sample_outputs": outputs["shared"][:5],
        "targets": [target("speedup", ">=", 2.0, speedup)],
    }
    # Diagnostic: the prompt pass alone (first token), where the support is or is not recomputed;
    # the decoding steps after it cost the same on both sides.
    times, outputs = measure(args.gen_batch, max_new_tokens=1)
    entry["first_token"] = {
        "shared_s": median(times["shared"]),
        "full_s": median(times["full"]),
        "speedup": median(times["full"]) / median(times["shared"]),
        "identical": outputs["shared"] == outputs["full"],
    }
    if len(query_prompts) > args.gen_batch:  # also: every query of the support set in one batch
        times, outputs = measure(len(query_prompts))
        entry["one_batch"] = {
            "batch": len(query_prompts),
            "shared_s": median(times["shared"]),
            "full_s": median(times["full"]),
            "speedup": median(times["full"]) / median(times["shared"]),
            "identical": outputs["shared"] == outputs["full"],
        }
    return entry


def bench_batched(args: argparse.Namespace, lm: str) -> dict[str, Any]:
    model = load_generation_model(args, lm)
    images, prompts = perf.vqa_inputs(args.prompts)
    kw = {"max_new_tokens": args.max_new_tokens, "stop_strings": STOPS}
    outputs: dict[str, list[str]] = {}

    def batched() -> None:
        outputs["batched"] = model.generate(images, prompts, **kw)

    def single() -> None:
        outputs["single"] = [model.generate([imgs], [p], **kw)[0] for imgs, p in zip(images, prompts)]

    times = perf.interleaved({"batched": batched, "single": single}, args.repeats, torch.device(args.device))
    speedup = median(times["single"]) / median(times["batched"])
    lengths = [len(model.tokenizer(p.replace("<image>", ""), add_special_tokens=False).input_ids) for p in prompts]
    return {
        "config": {
            **generation_config(args, model),
            "prompts": len(prompts),
            "prompt_text_tokens": [min(lengths), max(lengths)],
        },
        "project": side(f"one model.generate call, {len(prompts)} prompts left-padded", times["batched"]),
        "baseline": side(f"{len(prompts)} model.generate calls, one prompt each", times["single"]),
        "ratio": 1 / speedup,
        "speedup": speedup,
        "identical": outputs["batched"] == outputs["single"],
        "sample_outputs": outputs["batched"][:5],
        "targets": [target("speedup", ">=", 3.0, speedup)],
    }


# ------------------------------------------------------------------------------------------ data
def bench_data_loader(args: argparse.Namespace, lm: str, train: dict[str, Any] | None) -> dict[str, Any]:
    from frozen.benchlib import measure_throughput
    from frozen.config import DataConfig
    from frozen.data.pipeline import build_train_loader, resolve_shards
    from frozen.errors import DataError
    from frozen.model.lm import load_tokenizer, resolve_lm_path

    cfg = DataConfig(train_shards=args.shards, data_root=args.data_root, num_workers=2)
    try:
        resolve_shards(cfg.train_shards, cfg.data_root)
    except DataError as err:
        return {"skipped": f"{err}. Run: python scripts/make_shards.py easyvqa --out {args.data_root}/easyvqa"}
    tokenizer = load_tokenizer(resolve_lm_path(lm))
    rates = [
        measure_throughput(
            build_train_loader(cfg, tokenizer, image_size=args.image_size, batch_size=16, seed=r), args.loader_batches
        )
        for r in range(args.repeats)
    ]
    if train is None:  # data_loader alone: time the frozen train step here
        _, _, configure, step, _, _ = _train_setup(args, lm)
        configure("frozen")
        step_s = median(perf.interleaved({"frozen": step}, args.repeats, torch.device(args.device))["frozen"])
    else:
        step_s = train["project"]["median"]
    consumed = args.train_batch / step_s
    ratio = median(rates) / consumed
    return {
        "config": {
            "shards": args.shards,
            "image_size": args.image_size,
            "batch": 16,
            "num_workers": 2,
            "timed_batches": args.loader_batches,
            "train_batch": args.train_batch,
            "train_step_s": step_s,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
        },
        "project": side("data pipeline alone (build_train_loader, 2 workers)", rates, "samples/s"),
        "baseline": {
            "what": "train step consumption (train batch / step time)",
            "median": consumed,
            "unit": "samples/s",
            "values": [consumed],
        },
        "ratio": ratio,
        "speedup": None,
        "targets": [target("throughput_ratio", ">=", 5.0, ratio)],
    }


# ------------------------------------------------------------------------------------------ report
def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"make bench ({report['machine']['cpu']}, {report['machine']['torch_threads']} threads, "
        f"{report['device']})"
    )
    for col in ("entry", "project", "baseline", "ratio", "speedup", "target", "met", "notes"):
        table.add_column(col, justify="right" if col not in ("entry", "notes") else "left")
    for name, e in report["entries"].items():
        if "skipped" in e:
            table.add_row(name, "-", "-", "-", "-", "-", "-", f"[yellow]skipped: {e['skipped']}")
            continue

        def fmt(s):
            return f"{s['median']:.3g} {s['unit']}"

        notes = []
        if "identical" in e:
            notes.append(f"identical={e['identical']}")
        if "first_token" in e:
            notes.append(f"first token only: {e['first_token']['speedup']:.2f}x")
        if "one_batch" in e:
            o = e["one_batch"]
            notes.append(f"batch {o['batch']}: {o['speedup']:.2f}x, identical={o['identical']}")
        if "memory" in e:
            m = e["memory"]
            notes.append(
                f"peak mem {m['frozen_peak_extra_mb']:.0f}/{m['plain_peak_extra_mb']:.0f} MB (ratio {m['ratio']:.2f})"
            )
        if "activation_checkpointing" in e:
            notes.append(f"ckpt time x{e['activation_checkpointing']['ratio_to_frozen']:.2f}")
        if "mfu" in e:
            notes.append(f"MFU {e['mfu']['frozen']:.1%}, {e['tokens_per_s']:.0f} tok/s")
        for t in e["targets"]:
            table.add_row(
                name,
                fmt(e["project"]),
                fmt(e["baseline"]),
                f"{e['ratio']:.3f}",
                "-" if e["speedup"] is None else f"{e['speedup']:.2f}x",
                f"{t['metric']} {t['target']}",
                "[green]yes" if t["met"] else "[red]no",
                "; ".join(notes),
            )
            name, notes = "", []
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return {}
    with tempfile.TemporaryDirectory(prefix="frozen-bench-") as tmp:
        lm = resolve_lm(args, Path(tmp))
        report: dict[str, Any] = {
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "device": args.device,
            "machine": perf.machine_info(torch.device(args.device)),
            "args": {k: v for k, v in vars(args).items() if k != "memory_probe"},
            "entries": {},
        }
        entries = report["entries"]
        if "train_step" in args.only:
            entries["train_step"] = bench_train_step(args, lm)
        if "fewshot_shared_support" in args.only:
            entries["fewshot_shared_support"] = bench_fewshot(args, lm)
        if "batched_generation" in args.only:
            entries["batched_generation"] = bench_batched(args, lm)
        if "data_loader" in args.only:
            entries["data_loader"] = bench_data_loader(args, lm, entries.get("train_step"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
