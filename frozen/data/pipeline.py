"""The loaders: train and eval DataLoaders over the streams of :mod:`frozen.data.streams`.

Every loader takes ``data_root`` (the run's top-level setting, the one place it lives) and resolves
its shard pattern against it; the streams decide which process and worker reads which sample.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset

from frozen.config import DataConfig, SampleTextConfig
from frozen.data.collate import Collator
from frozen.data.interleave import train_collator
from frozen.data.samples import Example, SkipCounter
from frozen.data.shards import MAKE_SHARDS_HINT, resolve_shards
from frozen.data.streams import EvalStream, TrainStream, check_rank
from frozen.errors import DataError, FrozenConfigError


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


def _dataloader(dataset: IterableDataset, num_workers: int, pin_memory: bool, prefetch_factor: int | None = None,
                seed: int = 0) -> DataLoader:
    """``prefetch_factor`` None: torch's default (only used with workers)."""
    if num_workers > 0:
        # The tokenizer runs in forked workers; its own thread pool would deadlock/warn there.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Without a generator the DataLoader draws its base seed from the global torch RNG when it is
    # first iterated: in training that is after a resume restored the RNG state, so every later
    # dropout mask would shift by one draw against the uninterrupted run. Our streams seed their own
    # shuffles, so the loader's generator only has to keep its hands off the global RNG.
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=prefetch_factor if num_workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))


def build_train_loader(cfg: DataConfig, tokenizer: Any, *, data_root: str, image_size: int, batch_size: int,
                       seed: int, rank: int = 0, world_size: int = 1, skip_batches: int = 0,
                       pin_memory: bool = False, num_prefix_tokens: int | None = None) -> ShardLoader:
    """Infinite, deterministic training batches of ``cfg.train_shards`` (under ``data_root``) for this rank.

    ``cfg.packing``: packed batches (:mod:`frozen.data.packing`); ``cfg.interleave``, ``cfg.lead_text``,
    ``cfg.text_before_image``: prefix slots inside the rows (:mod:`frozen.data.interleave`). Both need the
    model's ``num_prefix_tokens``.

    The batch order is a function of (shards, seed, rank, world_size, cfg.num_workers, batch_size,
    shuffle_buffer). ``skip_batches=N`` resumes exactly at batch N without decoding skipped images.
    Raises :class:`DataError` at once if a shard is missing.
    """
    check_rank(rank, world_size)
    if batch_size < 1 or skip_batches < 0:
        raise FrozenConfigError(f"batch_size must be >= 1 and skip_batches >= 0, got {batch_size}, {skip_batches}")
    urls = resolve_shards(cfg.train_shards, data_root)
    collator = train_collator(cfg, tokenizer, num_prefix_tokens)
    stream = TrainStream(urls, cfg, collator, image_size=image_size,
                         batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                         skip_batches=skip_batches)
    return ShardLoader(_dataloader(stream, cfg.num_workers, pin_memory, cfg.prefetch_factor, seed=seed))


def build_eval_loader(cfg: DataConfig, tokenizer: Any, *, data_root: str, image_size: int, batch_size: int,
                      rank: int = 0, world_size: int = 1, shards: str | Sequence[str] | None = None,
                      pin_memory: bool = False) -> ShardLoader:
    """One exact pass of collated batches over ``shards`` (default ``cfg.val_shards``) for this rank.

    Uses the first caption of multi-caption samples; VQA samples keep their answers in ``meta``.
    """
    spec = shards if shards is not None else cfg.val_shards
    if not spec:
        raise DataError(f"no evaluation shards: set data.val_shards; {MAKE_SHARDS_HINT}")
    urls = resolve_shards(spec, data_root)
    stream = EvalStream(urls, cfg, image_size=image_size, rank=rank, world_size=world_size,
                        chunk_size=batch_size, collator=Collator(tokenizer, cfg.max_length), jpeg_draft=cfg.jpeg_draft)
    return ShardLoader(_dataloader(stream, cfg.num_workers, pin_memory, cfg.prefetch_factor))


def iter_eval_samples(shards: str | Sequence[str], *, data_root: str, image_size: int, rank: int = 0,
                      world_size: int = 1, text: SampleTextConfig | None = None, num_workers: int = 0,
                      counter: SkipCounter | None = None, jpeg_draft: bool = True) -> Iterator[Example]:
    """This rank's share of one exact pass over ``shards`` (under ``data_root``), as decoded examples.

    ``example.image`` is float ``[3, S, S]``; ``example.meta`` holds ``captions`` or the VQA json
    (``question``, ``answers``, ...); prompt and target follow ``text`` (default: the schema's
    templates). Bad-data counts go to ``counter`` if given. ``jpeg_draft``: large JPEGs decode at a reduced
    scale (:mod:`frozen.data.jpeg`), as training does by default.
    """
    urls = resolve_shards(shards, data_root)
    stream = EvalStream(urls, text or SampleTextConfig(), image_size=image_size, rank=rank, world_size=world_size,
                        chunk_size=64, jpeg_draft=jpeg_draft)
    source: Iterable[dict[str, Any]] = stream if num_workers == 0 else _dataloader(stream, num_workers, False)
    for item in source:
        if counter is not None:
            counter.add(item["skipped"])
        yield from item["examples"]


__all__ = ["ShardLoader", "build_train_loader", "build_eval_loader", "iter_eval_samples"]
