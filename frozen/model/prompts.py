"""Interleaved prompts: text with ``<image>`` markers, one image per marker; shot sampling.

``<image>`` is a split marker only: it never reaches the tokenizer, so the frozen vocabulary is
untouched. ``"<image>This is a dax.\\n<image>Q: What is this? A:"`` becomes
``[prefix(img0)] "This is a dax.\\n" [prefix(img1)] "Q: What is this? A:"``.
"""

from __future__ import annotations

import random
from typing import Collection, Sequence

IMAGE_MARKER = "<image>"


def split_prompt(prompt: str, num_images: int) -> list[str]:
    """Split on ``<image>``: ``n`` markers give ``n + 1`` text segments (some possibly empty).

    Raises a one-line error when the marker count differs from the number of images supplied.
    """
    segments = prompt.split(IMAGE_MARKER)
    if len(segments) - 1 != num_images:
        raise ValueError(
            f"prompt has {len(segments) - 1} {IMAGE_MARKER} marker(s) but {num_images} image(s) were given; "
            f"put one {IMAGE_MARKER} where each image goes: {prompt[:80]!r}"
        )
    return segments


def count_images(prompt: str) -> int:
    return prompt.count(IMAGE_MARKER)


def strip_images(prompt: str) -> str:
    """The prompt without its image markers (the blind condition keeps the text only)."""
    return prompt.replace(IMAGE_MARKER, "")


def sample_shots(pool_size: int, shots: int, rng: random.Random, exclude: Collection[int] = ()) -> list[int]:
    """``shots`` distinct demonstration indices from ``range(pool_size)``, none of them in ``exclude``.

    ``exclude`` holds the query itself and anything that would leak its answer (other questions
    about the same image). Sampling per query from a seeded ``rng`` (see :func:`query_rng`) makes
    every trial reproducible and independent of how the test set is split across ranks.
    """
    excluded = {i for i in exclude if 0 <= i < pool_size}
    available = pool_size - len(excluded)
    if shots > available:
        raise ValueError(f"asked for {shots} shots but only {available} demonstrations are available")
    picks: list[int] = []
    seen = set(excluded)
    # Rejection sampling keeps memory O(shots) even for pools of hundreds of thousands.
    while len(picks) < shots:
        i = rng.randrange(pool_size)
        if i not in seen:
            seen.add(i)
            picks.append(i)
    return picks


def query_rng(seed: int, trial: int, query_key: str | int) -> random.Random:
    """A generator that depends only on (seed, trial, query): identical on any rank / batch order."""
    return random.Random(f"{seed}/{trial}/{query_key}")


def render(template: str, **fields: str) -> str:
    """``template.format(**fields)`` with an error that names the missing field."""
    try:
        return template.format(**fields)
    except KeyError as err:
        raise ValueError(f"prompt template {template!r} uses {{{err.args[0]}}} but only {sorted(fields)} are available") from None


def join_demos(parts: Sequence[str], separator: str = "\n") -> str:
    return separator.join(parts)
