"""What every converter shares: options, writing jobs of samples with full accounting, limits, hints.

A converter (:mod:`frozen.prep.coco`, :mod:`frozen.prep.vqa`, :mod:`frozen.prep.tables`,
:mod:`frozen.prep.easyvqa`) reads its inputs through :mod:`frozen.prep.inputs`, turns them into
:class:`Job` s -- one per shard prefix, each a list of items and a function making a sample of an
item or a :class:`Skip` -- and hands them to :func:`write_jobs`, which checks that no existing
shard would be overwritten (before writing anything) and counts every item as written or skipped.
Training splits are shuffled (seeded) at conversion, because the loader's shuffle buffer only mixes
nearby samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from frozen.prep.report import ConvertReport
from frozen.prep.shards import (
    DEFAULT_MAX_COUNT,
    DEFAULT_MAX_SIZE,
    ShardSink,
    Track,
    check_free,
    no_track,
    read_image_file,
)

Sample = tuple[str, dict[str, Any]]  # (key, {extension: content})


class Skip(NamedTuple):
    """An item that gives no sample: the reason it is counted under, and what to show the user."""

    reason: str
    example: str | None = None


@dataclass
class WriteOptions:
    """Options shared by all converters."""

    max_count: int = DEFAULT_MAX_COUNT  # samples per shard
    max_size: int = DEFAULT_MAX_SIZE  # bytes per shard
    limit: int | None = None  # at most this many images (captions) / questions (VQA) / rows per split
    shuffle: bool = True  # shuffle the sample order of training splits
    seed: int = 0
    verify: bool = False  # fully decode every image (slower) instead of the cheap byte checks
    overwrite: bool = False  # replace existing shards of the prefixes written
    track: Track = no_track


@dataclass
class Job:
    """One shard prefix to write: ``make_sample(item)`` for each item gives a sample or a skip."""

    prefix: str
    items: Sequence[Any]
    make_sample: Callable[[Any], Sample | Skip | str]


def write_jobs(report: ConvertReport, out_dir: str | Path, jobs: Sequence[Job], opts: WriteOptions) -> None:
    """Write all jobs, after checking that none of their prefixes holds shards (unless overwriting)."""
    prefixes = [job.prefix for job in jobs]
    if len(set(prefixes)) != len(prefixes):
        raise ValueError(f"two jobs write the same prefix: {prefixes}")
    check_free(out_dir, prefixes, opts.overwrite)
    for job in jobs:
        items = job.items
        if opts.shuffle and job.prefix.endswith("-train"):
            items = list(items)
            random.Random(opts.seed).shuffle(items)
        sink = ShardSink(out_dir, job.prefix, max_count=opts.max_count, max_size=opts.max_size,
                         overwrite=opts.overwrite)
        for item in opts.track(items, job.prefix, len(items)):
            sample = job.make_sample(item)
            if isinstance(sample, Skip):
                report.skip(sample.reason, sample.example)
            elif isinstance(sample, str):
                report.skip(sample)
            elif sink.has(sample[0]):  # e.g. a sentid repeated within one Karpathy image
                report.skip("duplicate_record", sample[0])
            else:
                report.inputs += 1
                sink.write(*sample)
        report.add_sink(sink)


def take(report: ConvertReport, items: Sequence[Any], limit: int | None,
         weight: Callable[[Any], int] = lambda item: 1) -> list[Any]:
    """The first ``limit`` items; the rest are counted as ``beyond_limit`` (``weight(item)`` records each)."""
    if limit is None:
        return list(items)
    report.skip("beyond_limit", count=sum(weight(item) for item in items[limit:]))
    return list(items[:limit])


def missing_image_hint(root: Path, flag: str, first_missing: str | None) -> str:
    """Where image files were looked for and, when it can tell, the folder that holds them."""
    hint = f"looked in {flag} {str(root)!r}"
    if first_missing is None:
        return hint
    rel = Path(first_missing)
    if (root.parent / rel).is_file():
        return hint + f"; {str(root.parent / rel)!r} exists: pass {flag} {str(root.parent)!r}"
    try:
        subfolders = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        subfolders = []
    for sub in subfolders[:200]:  # one level down: e.g. Kaggle Flickr8k keeps its images in Images/
        for candidate in (sub / rel, sub / rel.name):
            if candidate.is_file():
                return hint + f"; {str(candidate)!r} exists: pass {flag} {str(candidate.parent)!r}"
    return hint + f"; is {flag} the folder that holds {rel.as_posix()!r}?"


def load_image(root: Path, rel: str, verify: bool) -> tuple[bytes, str] | Skip:
    """``(bytes, extension)`` of ``root / rel`` (absolute ``rel`` stays), or a Skip naming ``rel``."""
    image = read_image_file(root / rel, verify=verify)
    return Skip(image, rel) if isinstance(image, str) else image


def add_image_hint(report: ConvertReport, root: Path, flag: str) -> None:
    """Explain ``missing_image_file`` skips, if any (see :func:`missing_image_hint`)."""
    if report.skipped.get("missing_image_file"):
        first = report.examples.get("missing_image_file", [None])[0]
        report.hints["missing_image_file"] = missing_image_hint(root, flag, first)


__all__ = ["WriteOptions", "Sample", "Skip", "Job", "write_jobs", "take", "missing_image_hint", "load_image",
           "add_image_hint"]
