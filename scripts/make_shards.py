#!/usr/bin/env python
"""Convert image-text data sets to webdataset tar shards for frozen's data pipeline.

    python scripts/make_shards.py easyvqa --out data/easyvqa                      # offline, ~20 s
    python scripts/make_shards.py coco --annotations data/raw/coco/karpathy/dataset_coco.json \\
        --images data/raw/coco --out data/coco --per-image
    python scripts/make_shards.py coco --annotations data/raw/coco/annotations/captions_train2017.json \\
        --images data/raw/coco/train2017 --out data/coco2017
    python scripts/make_shards.py vqav2 --questions data/raw/vqav2/v2_OpenEnded_mscoco_val2014_questions.json \\
        --annotations data/raw/vqav2/v2_mscoco_val2014_annotations.json --images data/raw/coco/val2014 --out data/vqav2
    python scripts/make_shards.py coco --annotations data/raw/coco/karpathy/dataset_flickr8k.json \\
        --images data/raw/flickr8k/Flicker8k_Dataset --out data/coco --per-image     # flickr8k-captions-*.tar
    python scripts/make_shards.py captions --table my_data/captions.csv --out data/mine
    python scripts/make_shards.py captions --table data/raw/flickr8k/captions.txt \\
        --image-root data/raw/flickr8k/Images --prefix flickr8k --out data/flickr8k  # Kaggle's Flickr8k

Every subcommand writes ``{out}/{prefix}-{i:06d}.tar`` + ``{out}/sizes.json`` and prints a summary of
the samples written and the items skipped (by reason). See docs/data.md for the sample schema.

Exit codes: 0 done; 1 converted, but wrote nothing or skipped more than --max-skip-fraction of the
input (the summary names the reasons, first offending items and likely cause); 2 bad arguments or
input files (one line each, all at once, before any work; nothing written). Existing shards of the
prefixes written are never replaced without --overwrite.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Iterable, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from frozen.errors import FrozenError
from frozen.prep.coco import convert_coco
from frozen.prep.convert import WriteOptions
from frozen.prep.easyvqa import convert_easyvqa
from frozen.prep.inputs import TABLE_FORMATS
from frozen.prep.report import ConvertReport
from frozen.prep.shards import DEFAULT_MAX_COUNT, DEFAULT_MAX_SIZE
from frozen.prep.tables import convert_captions
from frozen.prep.vqa import convert_vqa

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
        p.add_argument("--overwrite", action="store_true",
                       help="replace existing shards of the prefixes this run writes (default: refuse)")
        p.add_argument("--max-skip-fraction", type=float, default=0.5,
                       help="fail (exit 1) when more than this fraction of the input is skipped (default %(default)s)")
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
    p.add_argument("--prefix", default=None,
                   help="shard name prefix (default: captions for COCO, {dataset}-captions for Flickr)")
    common(p)

    p = sub.add_parser("vqav2", help="VQAv2 or OK-VQA questions + annotations JSON")
    p.add_argument("--questions", required=True)
    p.add_argument("--annotations", default=None, help="omit for test splits (no answers)")
    p.add_argument("--images", required=True, help="COCO image folder, e.g. data/raw/coco/val2014")
    p.add_argument("--split", default=None, help="output split name (default: from data_subtype)")
    p.add_argument("--image-pattern", default=None,
                   help="image file name pattern, default COCO_{data_subtype}_{image_id:012d}.jpg")
    p.add_argument("--prefix", default="vqa", help="shard name and key prefix, e.g. okvqa (default %(default)s)")
    common(p)

    p = sub.add_parser("captions", help="any CSV/TSV/JSONL/JSON table of (image path, caption)")
    p.add_argument("--table", required=True, help="the .csv/.tsv/.jsonl/.json file (Kaggle's captions.txt: CSV)")
    p.add_argument("--format", default=None, choices=TABLE_FORMATS, help="default: from the file suffix")
    p.add_argument("--columns", default=None, type=lambda text: [c.strip() for c in text.split(",")],
                   help="column names of a headerless CSV/TSV, e.g. caption,url")
    p.add_argument("--split", default="train")
    p.add_argument("--prefix", default="captions", help="shard name and key prefix (default %(default)s)")
    p.add_argument("--image-column", default=None, help="default: image, file_name, filename, filepath, ...")
    p.add_argument("--caption-column", default=None, help="default: caption, then text")
    p.add_argument("--image-root", default=None, help="folder for relative image paths (default: the table's)")
    common(p)

    p = sub.add_parser("easyvqa", help="easy-VQA from the easy_vqa package (offline): caption + VQA shards")
    p.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    p.add_argument("--prefix", default=None, help="shards {prefix}-captions-*, {prefix}-vqa-* (default: no prefix)")
    common(p, max_count=1000, out="data/easyvqa")
    return parser


def run(args: argparse.Namespace, console: Console) -> ConvertReport:
    progress = Progress(TextColumn("[bold]{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console)

    def track(items: Iterable[T], description: str, total: int | None) -> Iterable[T]:
        return progress.track(items, total=total, description=description)

    opts = WriteOptions(max_count=args.max_count, max_size=args.max_size, limit=args.limit,
                        shuffle=not args.no_shuffle, seed=args.seed, verify=args.verify_images,
                        overwrite=args.overwrite, track=track)
    with progress:
        if args.kind == "coco":
            return convert_coco(args.annotations, args.images, args.out, split=args.split,
                                per_image=args.per_image, prefix=args.prefix, opts=opts)
        if args.kind == "vqav2":
            return convert_vqa(args.questions, args.annotations, args.images, args.out, split=args.split,
                               image_pattern=args.image_pattern, prefix=args.prefix, opts=opts)
        if args.kind == "captions":
            return convert_captions(args.table, args.out, split=args.split, prefix=args.prefix,
                                    image_column=args.image_column, caption_column=args.caption_column,
                                    image_root=args.image_root, fmt=args.format, columns=args.columns, opts=opts)
        return convert_easyvqa(args.out, splits=args.splits, prefix=args.prefix, opts=opts)


_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def check_args(args: argparse.Namespace) -> list[str]:
    """Every cheap problem with the arguments (values, files, folders), one line each, before any work."""
    problems = []
    files = {"coco": [("--annotations", "annotations")], "vqav2": [("--questions", "questions"),
                                                                   ("--annotations", "annotations")],
             "captions": [("--table", "table")]}.get(args.kind, [])
    folders = {"coco": [("--images", "images")], "vqav2": [("--images", "images")],
               "captions": [("--image-root", "image_root")]}.get(args.kind, [])
    for flag, name in files:
        path = getattr(args, name)
        if path is not None and Path(path).is_dir():
            problems.append(f"{flag} {path!r} is a folder; pass the file itself")
        elif path is not None and not Path(path).is_file():
            problems.append(f"{flag} {path!r} does not exist" + ("" if Path(path).parent.is_dir() else
                                                                  f" (nor its folder {str(Path(path).parent)!r})"))
    for flag, name in folders:
        path = getattr(args, name)
        if path is not None and not Path(path).is_dir():
            problems.append(f"{flag} {path!r} is {'a file' if Path(path).exists() else 'not an existing folder'}; "
                            f"pass the folder that holds the images")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        problems.append(f"--out {args.out!r} is a file; pass a folder for the shards")
    for flag, value, low in (("--max-count", args.max_count, 1), ("--max-size", args.max_size, 1),
                             ("--limit", args.limit, 1)):
        if value is not None and value < low:
            problems.append(f"{flag} must be >= {low}, got {value}")
    if not 0 <= args.max_skip_fraction <= 1:
        problems.append(f"--max-skip-fraction must be between 0 and 1, got {args.max_skip_fraction}")
    for flag, value in (("--prefix", getattr(args, "prefix", None)), ("--split", getattr(args, "split", None))):
        if value is not None and not _NAME.match(value):
            problems.append(f"{flag} {value!r} may only hold letters, digits, '_' and '-' (it names shard files)")
    if getattr(args, "columns", None) is not None and "" in args.columns:
        problems.append(f"--columns {','.join(args.columns)!r} has an empty name; example: --columns caption,url")
    return problems


def print_summary(report: ConvertReport, elapsed: float, console: Console) -> None:
    table = Table(title=f"shards in {report.out_dir} ({elapsed:.1f} s)")
    for column in ("prefix", "shards", "samples", "pattern"):
        table.add_column(column, justify="right" if column in ("shards", "samples") else "left")
    for prefix, pattern in report.patterns().items():
        table.add_row(prefix, str(len(report.shards[prefix])), str(report.written(prefix)), pattern or "-")
    console.print(table)
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    for line in report.details():  # the first offending items of each reason, and the likely cause
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = check_args(args)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 2
    console = Console(stderr=False)
    start = time.perf_counter()
    try:
        report = run(args, console)
    except FrozenError as exc:  # every bad input ends here: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # writing the shards (disk full, permissions)
        print(f"error: {exc.strerror or exc}: {exc.filename or args.out}", file=sys.stderr)
        return 2
    print_summary(report, time.perf_counter() - start, console)
    failure = report.failure(args.max_skip_fraction)
    if failure is not None:
        cause = report.main_cause()
        print(f"error: {failure}" + (f"; mostly {cause}" if cause else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
