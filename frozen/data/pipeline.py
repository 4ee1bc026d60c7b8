"""WebDataset-style training and evaluation pipelines over tar shards.

Shards are tar files of samples (``{key}.png|jpg`` + ``{key}.txt`` and/or ``{key}.json``), written
by ``scripts/make_shards.py`` or img2dataset. Everything heavy -- tar reading, image decoding,
the image transform, tokenisation and collation -- runs in DataLoader workers; the main process
only receives finished batches.

Work is split across *reader slots*: ``slot = rank * num_workers + worker``. TRAIN: each slot reads
an infinite stream of epochs; epoch ``e`` visits the shards in an order shuffled with
``(seed, e)`` and the slot takes every ``slots``-th shard, or -- when there are fewer shards than
slots -- every ``slots``-th sample of all shards, so that no slot idles and nothing is duplicated
within an epoch. A seeded shuffle buffer follows, then fixed groups of ``batch_size`` examples.
Batch composition depends only on the tar contents and text (never on decoding), so resuming with
``skip_batches=N`` drops the first N batches' worth of examples *before* decoding any image and
yields exactly the batches an uninterrupted run yields from batch N on. (An image that passes the
cheap byte checks but fails to decode leaves its batch one example short; a batch in which *every*
image fails is dropped, which would shift a later resume by one batch -- the one inexact case.)

EVAL: one deterministic pass; sample ``i`` of the concatenated shards (pattern order) goes to rank
``i % world_size``, then to worker ``(i // world_size) % num_workers``: every sample exactly once.

Over ~300 lines because train and eval streams share the shard listing, splitting and resume
arithmetic above: splitting them would put one invariant (every sample exactly once) in two files.
"""

from __future__ import annotations

import glob
import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from braceexpand import braceexpand
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from frozen.config import DataConfig
from frozen.data.collate import Collator
from frozen.data.samples import (
    Example,
    SkipCounter,
    decode_example,
    is_remote,
    iter_shard,
    parse_sample,
    warn_once,
)
from frozen.errors import DataError, FrozenConfigError
from frozen.model.vision import image_transform

MAKE_SHARDS_HINT = (
    "create shards with `python scripts/make_shards.py easyvqa --out data/easyvqa` "
    "(or the coco / vqav2 / captions converters, see docs/data.md), or fix data_root / the pattern"
)


# --------------------------------------------------------------------------------------------
# Shard lists


def resolve_shards(spec: str | Sequence[str], data_root: str = "data") -> list[str]:
    """Expand ``"a-{000..003}.tar::b-*.tar"`` (or a list of patterns) into shard paths, in order.

    Relative patterns are joined to ``data_root``; braces expand in order, globs expand sorted.
    Remote URLs (``pipe:``, ``http://``...) are expanded but not checked. Raises :class:`DataError`
    before any work starts for an empty spec, a glob matching nothing or a missing file.
    """
    patterns = spec.split("::") if isinstance(spec, str) else list(spec)
    patterns = [p.strip() for p in patterns if p and p.strip()]
    if not patterns:
        raise DataError(f"empty shard pattern {spec!r}; {MAKE_SHARDS_HINT}")
    urls: list[str] = []
    missing: list[str] = []
    for pattern in patterns:
        if is_remote(pattern):
            urls.extend(braceexpand(pattern))
            continue
        full = os.path.expanduser(pattern if os.path.isabs(pattern) else os.path.join(data_root, pattern))
        for path in braceexpand(full):
            if glob.has_magic(path):
                matches = sorted(glob.glob(path))
                if not matches:
                    raise DataError(f"shard pattern {path!r} matches no files; {MAKE_SHARDS_HINT}")
                urls.extend(matches)
            elif os.path.isfile(path):
                urls.append(path)
            else:
                missing.append(path)
    if missing:
        raise DataError(f"{len(missing)} shard file(s) missing, first {missing[0]!r}; {MAKE_SHARDS_HINT}")
    return urls


def check_rank(rank: int, world_size: int) -> None:
    """The one check of a reader's process rank (train and eval streams)."""
    if not 0 <= rank < world_size:
        raise FrozenConfigError(f"rank must be in [0, world_size={world_size}), got {rank}")


def dataset_size(urls: Iterable[str]) -> int | None:
    """Total samples of the shards from the ``sizes.json`` next to them; None if any is unknown."""
    total, cache = 0, {}
    for url in urls:
        folder, name = os.path.split(url)
        if folder not in cache:
            path = os.path.join(folder, "sizes.json")
            cache[folder] = json.loads(Path(path).read_text()) if os.path.isfile(path) else {}
        if name not in cache[folder]:
            return None
        total += int(cache[folder][name])
    return total


# --------------------------------------------------------------------------------------------
# Stream building blocks (all run inside the worker processes)


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _count_bad(counts: Counter, kind: str, key: str, url: str) -> None:
    counts[kind] += 1
    warn_once(kind, f"sample {key!r} in {url}")


def _epoch_samples(urls: Sequence[str], slot: int, slots: int, epoch: int, seed: int,
                   counts: Counter) -> Iterator[tuple[str, dict[str, bytes], str]]:
    """One training epoch of raw ``(key, files, url)`` for one reader slot (see module doc)."""
    order = list(urls)
    random.Random(f"{seed}:{epoch}").shuffle(order)
    if len(order) >= slots:
        for url in order[slot::slots]:
            yield from ((k, f, url) for k, f in iter_shard(url, counts))
        return
    index = 0  # every slot reads every shard and keeps every slots-th sample
    for position, url in enumerate(order):
        # Shard-level problems (truncated tar) are counted by one slot only, not by all readers.
        shard_counts = counts if position % slots == slot else Counter()
        for key, files in iter_shard(url, shard_counts):
            if index % slots == slot:
                yield key, files, url
            index += 1


def _shuffle(items: Iterable[Any], bufsize: int, rng: random.Random) -> Iterator[Any]:
    """Reservoir-style shuffle buffer: fill ``bufsize`` items, then emit a random one per new item."""
    if bufsize <= 1:
        yield from items
        return
    buf: list[Any] = []
    for item in items:
        if len(buf) < bufsize:
            buf.append(item)
            continue
        i = rng.randrange(bufsize)
        yield buf[i]
        buf[i] = item
    rng.shuffle(buf)
    yield from buf


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _batches_before(skip: int, worker: int, num_workers: int) -> int:
    """How many of the first ``skip`` global batches came from ``worker`` (round-robin order)."""
    return (skip - worker + num_workers - 1) // num_workers if skip > worker else 0


class TrainStream(IterableDataset):
    """Infinite stream of collated training batches (one DataLoader item = one batch)."""

    def __init__(self, urls: Sequence[str], cfg: DataConfig, collator: Collator, *, image_size: int,
                 batch_size: int, seed: int, rank: int, world_size: int, skip_batches: int):
        super().__init__()
        self.urls, self.cfg, self.collator = list(urls), cfg, collator
        self.image_size, self.batch_size, self.seed = image_size, batch_size, seed
        self.rank, self.world_size, self.skip_batches = rank, world_size, skip_batches

    def _examples(self, slot: int, slots: int, counts: Counter) -> Iterator[Example]:
        caption_seed = self.seed if self.cfg.per_image_caption == "random" else None
        epoch = 0
        while True:
            good = 0
            for key, files, url in _epoch_samples(self.urls, slot, slots, epoch, self.seed, counts):
                example = parse_sample(key, files, self.cfg, url=url, epoch=epoch, caption_seed=caption_seed)
                if isinstance(example, str):
                    _count_bad(counts, example, key, url)
                    continue
                good += 1
                yield example
            if good == 0:  # otherwise an all-bad or too-small share would loop forever
                raise DataError(f"reader slot {slot} of {slots} (rank x worker) got no usable sample from "
                                f"{len(self.urls)} shard(s); write more/valid samples or use fewer workers/ranks")
            epoch += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker()
        # After a resume the DataLoader restarts its round-robin at worker 0, but batch N of the
        # uninterrupted run came from worker N % num_workers: rotate the roles accordingly.
        virtual = (worker + self.skip_batches) % num_workers
        to_skip = _batches_before(self.skip_batches, virtual, num_workers)
        slot, slots = self.rank * num_workers + virtual, self.world_size * num_workers
        counts: Counter = Counter()
        rng = random.Random(f"{self.seed}:shuffle:{slot}")
        shuffled = _shuffle(self._examples(slot, slots, counts), self.cfg.shuffle_buffer, rng)
        transform = image_transform(self.image_size)
        for index, group in enumerate(_chunks(shuffled, self.batch_size)):
            if index < to_skip:
                continue  # resumed: these batches were consumed before; their images are never decoded
            if index == to_skip and to_skip:
                counts.clear()  # bad data met while skipping was reported by the interrupted run
            decoded = [e for e in (decode_example(x, transform, counts) for x in group) if e is not None]
            if not decoded:
                continue  # a whole batch of undecodable images: counts carry over to the next batch
            batch = self.collator(decoded)
            batch["skipped"] = dict(counts)
            counts.clear()
            yield batch


class EvalStream(IterableDataset):
    """One exact pass: chunks of up to ``chunk_size`` decoded examples, collated if a collator is given.

    This rank's samples are cut into consecutive chunks of ``chunk_size`` raw samples and chunk
    ``c`` goes to worker ``c % num_workers``; since the DataLoader collects worker items
    round-robin, the rank's output order is the shard order whatever ``num_workers`` is. Every chunk
    yields exactly one item -- a batch dict, or ``{"examples": [...], "keys": [...]}`` -- always
    with ``skipped``; an item with empty ``keys`` (all bad) only carries counts.
    """

    def __init__(self, urls: Sequence[str], cfg: DataConfig, *, image_size: int, rank: int, world_size: int,
                 chunk_size: int, collator: Collator | None = None):
        super().__init__()
        check_rank(rank, world_size)
        self.urls, self.cfg, self.collator = list(urls), cfg, collator
        self.image_size, self.rank, self.world_size, self.chunk_size = image_size, rank, world_size, chunk_size

    def _item(self, chunk: list[Example], counts: Counter) -> dict[str, Any]:
        item = self.collator(chunk) if self.collator and chunk else {"examples": chunk, "keys": [e.key for e in chunk]}
        item["skipped"] = dict(counts)
        counts.clear()
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker()
        reader, readers = self.rank * num_workers + worker, self.world_size * num_workers
        transform = image_transform(self.image_size)
        counts: Counter = Counter()
        chunk: list[Example] = []
        current: int | None = None  # index of the chunk being filled
        index = 0  # position in the concatenated shards
        for position, url in enumerate(self.urls):
            # Shard-level problems (truncated tar) are counted by one reader only.
            shard_counts = counts if position % readers == reader else Counter()
            for key, files in iter_shard(url, shard_counts):
                i, index = index, index + 1
                if i % self.world_size != self.rank:
                    continue
                chunk_index = (i // self.world_size) // self.chunk_size
                if chunk_index % num_workers != worker:
                    continue
                if current is not None and chunk_index != current:
                    yield self._item(chunk, counts)
                    chunk = []
                current = chunk_index
                # Eval is deterministic: first caption; VQA samples without answers are kept.
                example = parse_sample(key, files, self.cfg, url=url, require_answer=False)
                if isinstance(example, str):
                    _count_bad(counts, example, key, url)
                elif decode_example(example, transform, counts) is not None:
                    chunk.append(example)
        if current is not None or counts:
            yield self._item(chunk, counts)


# --------------------------------------------------------------------------------------------
# Loaders


class ShardLoader:
    """Iterates a DataLoader's batches and accumulates their bad-data counts in :attr:`skipped`."""

    def __init__(self, dataloader: DataLoader):
        self.dataloader = dataloader
        self.skipped = SkipCounter()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.dataloader:
            self.skipped.update(batch)
            if batch["keys"]:
                yield batch


def _dataloader(dataset: IterableDataset, cfg: DataConfig, num_workers: int, pin_memory: bool,
                seed: int = 0) -> DataLoader:
    if num_workers > 0:
        # The tokenizer runs in forked workers; its own thread pool would deadlock/warn there.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Without a generator the DataLoader draws its base seed from the global torch RNG when it is
    # first iterated: in training that is after a resume restored the RNG state, so every later
    # dropout mask would shift by one draw against the uninterrupted run. Our streams seed their own
    # shuffles, so the loader's generator only has to keep its hands off the global RNG.
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=cfg.prefetch_factor if num_workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))


def build_train_loader(cfg: DataConfig, tokenizer: Any, *, image_size: int, batch_size: int, seed: int,
                       rank: int = 0, world_size: int = 1, skip_batches: int = 0,
                       pin_memory: bool = False) -> ShardLoader:
    """Infinite, deterministic training batches of ``cfg.train_shards`` for this rank.

    The batch order is a function of (shards, seed, rank, world_size, cfg.num_workers, batch_size,
    shuffle_buffer). ``skip_batches=N`` resumes exactly at batch N without decoding skipped images.
    Raises :class:`DataError` at once if a shard is missing.
    """
    check_rank(rank, world_size)
    if batch_size < 1 or skip_batches < 0:
        raise FrozenConfigError(f"batch_size must be >= 1 and skip_batches >= 0, got {batch_size}, {skip_batches}")
    urls = resolve_shards(cfg.train_shards, cfg.data_root)
    stream = TrainStream(urls, cfg, Collator(tokenizer, cfg.max_length), image_size=image_size,
                         batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                         skip_batches=skip_batches)
    return ShardLoader(_dataloader(stream, cfg, cfg.num_workers, pin_memory, seed=seed))


def build_eval_loader(cfg: DataConfig, tokenizer: Any, *, image_size: int, batch_size: int, rank: int = 0,
                      world_size: int = 1, shards: str | Sequence[str] | None = None,
                      pin_memory: bool = False) -> ShardLoader:
    """One exact pass of collated batches over ``shards`` (default ``cfg.val_shards``) for this rank.

    Uses the first caption of multi-caption samples; VQA samples keep their answers in ``meta``.
    """
    spec = shards if shards is not None else cfg.val_shards
    if not spec:
        raise DataError(f"no evaluation shards: set data.val_shards; {MAKE_SHARDS_HINT}")
    urls = resolve_shards(spec, cfg.data_root)
    stream = EvalStream(urls, cfg, image_size=image_size, rank=rank, world_size=world_size,
                        chunk_size=batch_size, collator=Collator(tokenizer, cfg.max_length))
    return ShardLoader(_dataloader(stream, cfg, cfg.num_workers, pin_memory))


def iter_eval_samples(shards: str | Sequence[str], *, image_size: int, rank: int = 0, world_size: int = 1,
                      cfg: DataConfig | None = None, num_workers: int = 0,
                      counter: SkipCounter | None = None) -> Iterator[Example]:
    """This rank's share of one exact pass, as decoded :class:`Example` objects (not tokenised).

    ``example.image`` is float ``[3, S, S]``; ``example.meta`` holds ``captions`` or the VQA json
    (``question``, ``answers``, ...). Bad-data counts go to ``counter`` if given. ``cfg`` supplies
    ``data_root`` and the prompt templates (defaults: :class:`DataConfig`'s).
    """
    cfg = cfg if cfg is not None else DataConfig(train_shards="")
    urls = resolve_shards(shards, cfg.data_root)
    stream = EvalStream(urls, cfg, image_size=image_size, rank=rank, world_size=world_size, chunk_size=64)
    source: Iterable[dict[str, Any]] = stream if num_workers == 0 else _dataloader(stream, cfg, num_workers, False)
    for item in source:
        if counter is not None:
            counter.add(item["skipped"])
        yield from item["examples"]


__all__ = [
    "DataConfig", "Example", "SkipCounter", "Collator", "ShardLoader", "TrainStream", "EvalStream",
    "resolve_shards", "dataset_size", "build_train_loader", "build_eval_loader", "iter_eval_samples",
]
