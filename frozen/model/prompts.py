"""Interleaved prompts as data: text segments with images between them; templates; shot sampling.

A :class:`Prompt` is ``texts[0] image[0] texts[1] image[1] ... texts[n]``: ``n`` images and ``n + 1``
text segments (any of them may be empty). It is written as a string with one ``<image>`` marker per
image, ``"<image>This is a dax.\\n<image>Q: What is this? A:"`` with two images, and parsed once.
``<image>`` is a split marker only: it never reaches the tokenizer, so the frozen vocabulary is
untouched. :meth:`Prompt.tokenize` gives a :class:`TokenizedPrompt`: each text segment tokenised on
its own, so joining two prompts re-tokenises only the one segment where they meet.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from frozen.core.text import unicode_problem
from frozen.errors import InputError

IMAGE_MARKER = "<image>"

# A prompt's flat layout: one entry per text token (its id, >= 0) or per image (-(1 + its index in the
# prompt's images)); an image entry stands for that image's k prefix embeddings.
Layout = list[int]


def split_prompt(prompt: str, num_images: int) -> list[str]:
    """Split on ``<image>``: ``n`` markers give ``n + 1`` text segments (some possibly empty).

    Raises a one-line error when the marker count differs from the number of images supplied.
    """
    if not isinstance(prompt, str):
        raise InputError(f"a prompt is a string with {IMAGE_MARKER} markers, got {type(prompt).__name__}")
    segments = prompt.split(IMAGE_MARKER)
    if len(segments) - 1 != num_images:
        raise InputError(
            f"prompt has {len(segments) - 1} {IMAGE_MARKER} marker(s) but {num_images} image(s) were given; "
            f"put one {IMAGE_MARKER} where each image goes: {prompt[:80]!r}"
        )
    return segments


@dataclass(frozen=True, eq=False)  # eq=False: images may be tensors, whose == is elementwise
class Prompt:
    """Text segments with one image between each two: ``len(texts) == len(images) + 1``."""

    texts: tuple[str, ...] = ("",)
    images: tuple[Any, ...] = ()  # PIL images or [3, S, S] tensors

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "images", tuple(self.images))
        if len(self.texts) != len(self.images) + 1:
            raise InputError(f"a Prompt needs one more text segment than images, got {len(self.texts)} texts "
                             f"and {len(self.images)} images; build it with Prompt.parse(text, images)")
        for i, text in enumerate(self.texts):
            if not isinstance(text, str):
                raise InputError(f"a Prompt's text segments are strings, got {type(text).__name__} in segment {i}")
            if IMAGE_MARKER in text:  # also where joining two prompts spells a marker across the seam
                raise InputError(f"a Prompt's text segments cannot contain {IMAGE_MARKER}; use Prompt.parse(text, "
                                 f"images) (segment {i}: {text[:80]!r})")
            problem = unicode_problem(text)
            if problem:  # the tokenizer would fail with a TypeError
                raise InputError(f"a Prompt's text segment {i} is not valid Unicode ({problem}): {text[:80]!r}")

    @classmethod
    def parse(cls, text: str, images: Sequence[Any] | None = None) -> Prompt:
        """``text`` with one ``<image>`` marker per entry of ``images`` (a one-line error otherwise)."""
        images = list(images or [])
        return cls(tuple(split_prompt(text, len(images))), tuple(images))

    @classmethod
    def concat(cls, *parts: Prompt) -> Prompt:
        """The prompts one after another; where two meet, their texts join into one segment."""
        texts, images = [""], []
        for part in parts:
            texts[-1] += part.texts[0]
            texts += part.texts[1:]
            images += part.images
        return cls(tuple(texts), tuple(images))

    def __add__(self, other: Prompt) -> Prompt:
        return Prompt.concat(self, other)

    @property
    def text(self) -> str:
        """The prompt as a string with ``<image>`` markers: ``Prompt.parse(p.text, p.images)`` is ``p``."""
        return IMAGE_MARKER.join(self.texts)

    @property
    def num_images(self) -> int:
        return len(self.images)

    def tokenize(self, tokenizer: Any) -> TokenizedPrompt:
        """Each text segment through ``tokenizer`` on its own (no special tokens added)."""
        return TokenizedPrompt(self, tuple(_ids(tokenizer, t) for t in self.texts))


def _ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False).input_ids) if text else ()


@dataclass(frozen=True, eq=False)
class TokenizedPrompt:
    """A :class:`Prompt` with ``ids[i]``, the token ids of ``prompt.texts[i]`` tokenised on its own."""

    prompt: Prompt
    ids: tuple[tuple[int, ...], ...]

    def join(self, other: TokenizedPrompt, tokenizer: Any) -> TokenizedPrompt:
        """``(self.prompt + other.prompt).tokenize(tokenizer)``, re-tokenising only the segment where they meet.

        That segment is ``self``'s last text + ``other``'s first, and it is tokenised as one string:
        a BPE tokenizer may merge across the seam (``"a "`` + ``"dax"`` is ``"a", " dax"``, not
        ``"a", " ", "dax"``), so its ids are not ``self.ids[-1] + other.ids[0]`` in general.
        """
        last, first = self.prompt.texts[-1], other.prompt.texts[0]
        seam = self.ids[-1] if not first else other.ids[0] if not last else _ids(tokenizer, last + first)
        return TokenizedPrompt(self.prompt + other.prompt, self.ids[:-1] + (seam,) + other.ids[1:])

    def layout(self) -> Layout:
        """Token ids and image slots in prompt order (see :data:`Layout`)."""
        layout: Layout = list(self.ids[0])
        for i, ids in enumerate(self.ids[1:]):
            layout.append(-(i + 1))  # image i sits between text segments i and i + 1
            layout += ids
        return layout


def sample_shots(pool_size: int, shots: int, rng: random.Random, exclude: Collection[int] = ()) -> list[int]:
    """``shots`` distinct demonstration indices from ``range(pool_size)``, none of them in ``exclude``.

    ``exclude`` holds the query itself and anything that would leak its answer (other questions
    about the same image). Sampling per query from a seeded ``rng`` (see :func:`query_rng`) makes
    every trial reproducible and independent of how the test set is split across ranks.
    """
    excluded = {i for i in exclude if 0 <= i < pool_size}
    available = pool_size - len(excluded)
    if shots > available:
        raise InputError(f"asked for {shots} shots but only {available} demonstrations are available")
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
        raise InputError(f"prompt template {template!r} uses {{{err.args[0]}}} "
                         f"but only {sorted(fields)} are available") from None
    except (IndexError, ValueError, AttributeError) as err:  # "{0}", a lone "{", "{q!z}", "{q.x}"
        raise InputError(f"prompt template {template!r} is not a format string with only named fields "
                         f"{sorted(fields)} ({err}); write literal braces as {{{{ and }}}}") from None
