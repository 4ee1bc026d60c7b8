#!/usr/bin/env python
"""Convert image-text data sets to webdataset tar shards for frozen's data pipeline.

    python scripts/make_shards.py easyvqa --out data/easyvqa                      # offline, ~20 s
    python scripts/make_shards.py coco --annotations data/raw/coco/karpathy/dataset_coco.json \\
        --images data/raw/coco --out data/coco --per-image
    python scripts/make_shards.py coco --annotations data/raw/coco/annotations/captions_train2017.json \\
        --images data/raw/coco/train2017 --out data/coco2017
    python scripts/make_shards.py vqav2 --questions data/raw/vqav2/v2_OpenEnded_mscoco_val2014_questions.json \\
        --annotations data/raw/vqav2/v2_mscoco_val2014_annotations.json --images data/raw/coco/val2014 --out data/vqav2
    python scripts/make_shards.py captions --table my_data/captions.csv --out data/mine

Every subcommand writes ``{out}/{prefix}-{i:06d}.tar`` + ``{out}/sizes.json`` and prints a summary of
the samples written and the items skipped (by reason). See docs/data.md for the sample schema.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from pathlib import Path
from typing import Iterable, TypeVar

if importlib.util.find_spec("frozen") is None:  # a checkout without `pip install -e .`: use the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from frozen.prep.convert import WriteOptions, convert_captions, convert_coco, convert_vqa
from frozen.prep.easyvqa import convert_easyvqa
from frozen.errors import FrozenError
from frozen.prep.shards import DEFAULT_MAX_COUNT, DEFAULT_MAX_SIZE, ConvertReport

T = TypeVar("T")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"500M"`` / ``"1G"`` / ``"123456"`` -> bytes (powers of 1000; KiB-style suffixes accepted)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 1000000, 500M, 1G)")
    number, unit = match.groups()
    return int(float(number) * 1000 ** " kmgt".index(unit.lower() or " "))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)

    def common(p: argparse.ArgumentParser, max_count: int = DEFAULT_MAX_COUNT, out: str | None = None) -> None:
        p.add_argument("--out", required=out is None, default=out, help="output folder for the shards")
        p.add_argument("--max-count", type=int, default=max_count, help="samples per shard (default %(default)s)")
        p.add_argument("--max-size", type=parse_size, default=DEFAULT_MAX_SIZE,
                       help="bytes per shard, e.g. 500M (default 1G)")
        p.add_argument("--limit", type=int, default=None,
                       help="convert only the first N images (captions) / questions (VQA) per split")
        p.add_argument("--seed", type=int, default=0, help="seed of the training-split shuffle")
        p.add_argument("--no-shuffle", action="store_true", help="keep the input order in training splits")
        p.add_argument("--verify-images", action="store_true",
                       help="fully decode every image (slower; default: cheap checks of the bytes)")

    p = sub.add_parser("coco", help="COCO captions JSON or Karpathy dataset_coco.json")
    p.add_argument("--annotations", required=True, help="captions_train2017.json or dataset_coco.json")
    p.add_argument("--images", required=True,
                   help="image folder (COCO JSON: e.g. train2017/; Karpathy: the folder holding train2014/, val2014/)")
    p.add_argument("--split", default=None, help="output split name (default: from the file name / Karpathy splits)")
    p.add_argument("--per-image", action="store_true", help="one sample per image with all captions")
    common(p)

    p = sub.add_parser("vqav2", help="VQAv2 or OK-VQA questions + annotations JSON")
    p.add_argument("--questions", required=True)
    p.add_argument("--annotations", default=None, help="omit for test splits (no answers)")
    p.add_argument("--images", required=True, help="COCO image folder, e.g. data/raw/coco/val2014")
    p.add_argument("--split", default=None, help="output split name (default: from data_subtype)")
    p.add_argument("--image-pattern", default=None,
                   help="image file name pattern, default COCO_{data_subtype}_{image_id:012d}.jpg")
    common(p)

    p = sub.add_parser("captions", help="any CSV/TSV/JSONL/JSON table of (image path, caption)")
    p.add_argument("--table", required=True, help="the .csv/.tsv/.jsonl/.json file")
    p.add_argument("--split", default="train")
    p.add_argument("--prefix", default="captions", help="shard name prefix (default %(default)s)")
    p.add_argument("--image-column", default=None, help="default: image, file_name, filename, filepath, ...")
    p.add_argument("--caption-column", default=None, help="default: caption, then text")
    p.add_argument("--image-root", default=None, help="folder for relative image paths (default: the table's)")
    common(p)

    p = sub.add_parser("easyvqa", help="easy-VQA from the easy_vqa package (offline): caption + VQA shards")
    p.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    common(p, max_count=1000, out="data/easyvqa")
    return parser


def run(args: argparse.Namespace, console: Console) -> ConvertReport:
    progress = Progress(TextColumn("[bold]{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console)

    def track(items: Iterable[T], description: str, total: int | None) -> Iterable[T]:
        return progress.track(items, total=total, description=description)

    opts = WriteOptions(max_count=args.max_count, max_size=args.max_size, limit=args.limit,
                        shuffle=not args.no_shuffle, seed=args.seed, verify=args.verify_images, track=track)
    with progress:
        if args.kind == "coco":
            return convert_coco(args.annotations, args.images, args.out, split=args.split,
                                per_image=args.per_image, opts=opts)
        if args.kind == "vqav2":
            return convert_vqa(args.questions, args.annotations, args.images, args.out, split=args.split,
                               image_pattern=args.image_pattern, opts=opts)
        if args.kind == "captions":
            return convert_captions(args.table, args.out, split=args.split, prefix=args.prefix,
                                    image_column=args.image_column, caption_column=args.caption_column,
                                    image_root=args.image_root, opts=opts)
        return convert_easyvqa(args.out, splits=args.splits, opts=opts)


def print_summary(report: ConvertReport, elapsed: float, console: Console) -> None:
    table = Table(title=f"shards in {report.out_dir} ({elapsed:.1f} s)")
    for column in ("prefix", "shards", "samples", "pattern"):
        table.add_column(column, justify="right" if column in ("shards", "samples") else "left")
    for prefix, pattern in report.patterns().items():
        table.add_row(prefix, str(len(report.shards[prefix])), str(report.written(prefix)), pattern or "-")
    console.print(table)
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(report.skipped.items())) or "none"
    console.print(f"written {report.written()} samples; skipped {sum(report.skipped.values())} ({skipped})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=False)
    start = time.perf_counter()
    try:
        report = run(args, console)
    except FrozenError as exc:
        console.print(f"error: {exc}", style="red", markup=False, highlight=False)
        return 1
    print_summary(report, time.perf_counter() - start, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
