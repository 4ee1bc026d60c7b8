"""The train and eval streams over tar shards: which reader takes which sample, in which order.

Everything heavy -- tar reading, image decoding, the image transform, tokenisation and collation --
runs in DataLoader workers; the main process only receives finished batches. Work is split across
*reader slots*: ``slot = rank * num_workers + worker``.

TRAIN: each slot reads an infinite stream of epochs; epoch ``e`` visits the shards in an order
shuffled with ``(seed, e)`` and the slot takes every ``slots``-th shard, or -- when there are fewer
shards than slots -- every ``slots``-th sample of all shards, so that no slot idles and nothing is
duplicated within an epoch. A seeded shuffle buffer follows, then fixed groups of ``batch_size``
examples. Batch composition depends only on the tar contents and text (never on decoding), so
resuming with ``skip_batches=N`` drops the first N batches' worth of examples *before* decoding any
image and yields exactly the batches an uninterrupted run yields from batch N on. (An image that
passes the cheap byte checks but fails to decode leaves its batch one example short; a batch in
which *every* image fails is dropped, which would shift a later resume by one batch -- the one
inexact case.)

EVAL: one deterministic pass; sample ``i`` of the concatenated shards (pattern order) goes to rank
``i % world_size``, then to worker ``(i // world_size) % num_workers``: every sample exactly once.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from frozen.config import DataConfig, SampleTextConfig
from frozen.data.collate import Collator
from frozen.data.samples import Example, decode_example, iter_shard, parse_sample, warn_once
from frozen.errors import DataError, FrozenConfigError
from frozen.model.vision import image_transform


def check_rank(rank: int, world_size: int) -> None:
    """The one check of a reader's process rank (train and eval streams)."""
    if not 0 <= rank < world_size:
        raise FrozenConfigError(f"rank must be in [0, world_size={world_size}), got {rank}")


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
        self.draft = image_size if cfg.jpeg_draft else None  # large JPEGs decode at a scale >= image_size

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
        # uint8 pixels: a quarter of the bytes through worker queues, pinned memory and the host-to-device
        # copy; FrozenModel.encode_images makes them the same float32 values on the device.
        transform = image_transform(self.image_size, torch.uint8)
        for index, group in enumerate(_chunks(shuffled, self.batch_size)):
            if index < to_skip:
                continue  # resumed: these batches were consumed before; their images are never decoded
            if index == to_skip and to_skip:
                counts.clear()  # bad data met while skipping was reported by the interrupted run
            decoded = [e for e in (decode_example(x, transform, counts, self.draft) for x in group) if e is not None]
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
    with ``skipped``; an item with empty ``keys`` (all bad) only carries counts. ``jpeg_draft``: large
    JPEGs decode at a reduced scale, as in training (:mod:`frozen.data.jpeg`).
    """

    def __init__(self, urls: Sequence[str], cfg: SampleTextConfig, *, image_size: int, rank: int, world_size: int,
                 chunk_size: int, collator: Collator | None = None, jpeg_draft: bool = True):
        super().__init__()
        check_rank(rank, world_size)
        self.urls, self.cfg, self.collator = list(urls), cfg, collator
        self.draft = image_size if jpeg_draft else None
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
                elif decode_example(example, transform, counts, self.draft) is not None:
                    chunk.append(example)
        if current is not None or counts:
            yield self._item(chunk, counts)
