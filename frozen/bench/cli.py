"""`make bench`: arguments, the run of the chosen entries, ``outputs/bench/bench.json`` and the table
(see ``frozen.bench`` and docs/bench.md for what each entry measures)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from rich.console import Console
from rich.table import Table

from frozen.bench import lib as perf  # noqa: E402
from frozen.bench.caption_lengths import load_table  # noqa: E402
from frozen.bench.common import DEFAULT_LM, ENTRIES, resolve_lm  # noqa: E402
from frozen.bench.compiled import bench_train_compiled  # noqa: E402
from frozen.bench.data import bench_data_loader  # noqa: E402
from frozen.bench.generation import bench_batched, bench_fewshot  # noqa: E402
from frozen.bench.jpeg import bench_jpeg_decode  # noqa: E402
from frozen.bench.packing import bench_train_packing  # noqa: E402
from frozen.bench.train import bench_train_step, memory_probe  # noqa: E402
from frozen.cli import report as report_error  # noqa: E402
from frozen.errors import FrozenError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="make bench: the fast paths timed against the plain way",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    p.add_argument("--packing-batch", type=int, default=64, help="batch of train_packing (real caption lengths)")
    p.add_argument("--caption-lengths", default=None,
                   help="train_packing's caption-length table (scripts/caption_lengths.py); default: CC3M val, SmolLM2")
    p.add_argument("--packing-batches", type=int, default=4, help="batches (one step each) per train_packing repeat")
    p.add_argument("--gen-batch", type=int, default=16, help="batch size of both sides of fewshot_shared_support")
    p.add_argument("--queries", type=int, default=25, help="queries of fewshot_shared_support")
    p.add_argument("--prompts", type=int, default=16, help="prompts of batched_generation")
    p.add_argument("--max-new-tokens", type=int, default=10)
    p.add_argument("--data-root", default="data")
    p.add_argument("--shards", default="easyvqa/captions-train-*.tar")
    p.add_argument("--loader-batches", type=int, default=20, help="batches timed per data_loader repeat")
    p.add_argument("--jpeg-batches", type=int, default=10, help="batches of 16 timed per jpeg_decode repeat and side")
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


def print_table(report: dict[str, Any]) -> None:
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
        if "workers_per_gpu" in e:
            w, px = e["workers_per_gpu"], e["pixels"]
            notes.append(f"{w['images_per_s_per_gpu']:.0f} img/s per GPU ({w['step_s']:.3f} s/step, docs/scaling.md) "
                         f"needs {w['draft']} workers/GPU ({w['full']} with full decode); pixels vs full decode: "
                         f"mean abs {px['mean_abs']:.2f}/255, PSNR {px['psnr_db']:.1f} dB; decode + resize alone "
                         f"{e['decode_only']['speedup']:.2f}x (full decode libjpeg-turbo vs PIL "
                         f"{e['decode_only']['full_vs_pil']:.2f}x); CPU time (wall clock "
                         f"{e['wall_clock']['draft']['median'] / e['wall_clock']['full']['median']:.2f}x)")
        if "loss_rel_diff" in e.get("equal", {}):
            q = e["equal"]
            notes.append(f"loss rel diff {q['loss_rel_diff']:.1e}, grad rel diff {q['grad_rel_diff_max']:.1e}")
        if "lm_positions" in e:
            shares = [e["lm_positions"][s]["real_fraction"] for s in ("padded", "packed")]
            notes.append(f"real positions {shares[0]:.0%} padded, {shares[1]:.0%} packed")
        if "compile_s" in e:
            notes.append(f"compile {e['compile_s']:.1f} s, {e['graphs']} graph(s), {e['graph_breaks']} break(s), "
                         f"equal within tolerance={e['equal']['within_tolerance']}")
        if "mfu" in e:
            notes.append(f"MFU {e['mfu']['frozen']:.1%}, {e['tokens_per_s']:.0f} tok/s")
        for t in e["targets"] or [{"metric": "none", "target": "(reported)", "met": None}]:
            table.add_row(
                name,
                fmt(e["project"]),
                fmt(e["baseline"]),
                f"{e['ratio']:.3f}",
                "-" if e["speedup"] is None else f"{e['speedup']:.2f}x",
                f"{t['metric']} {t['target']}",
                "-" if t["met"] is None else "[green]yes" if t["met"] else "[red]no",
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
    if "train_packing" in args.only:
        try:  # a bad table is one line before any entry runs
            load_table(args.caption_lengths)
        except FrozenError as err:
            report_error(err)
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
        # In this order: data_loader compares with what train_step measured, when it ran.
        runs: dict[str, Callable[[], Any]] = {
            "train_step": lambda: bench_train_step(args, lm),
            "fewshot_shared_support": lambda: bench_fewshot(args, lm),
            "batched_generation": lambda: bench_batched(args, lm),
            "data_loader": lambda: bench_data_loader(args, lm, entries.get("train_step")),
            "jpeg_decode": lambda: bench_jpeg_decode(args, lm),
            "train_packing": lambda: bench_train_packing(args, lm),
            "train_compiled": lambda: bench_train_compiled(args, lm),
        }
        for name, run in runs.items():
            if name in args.only:
                entries[name] = run()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
