"""Building blocks of the schemas' ``check`` functions: problems are plain strings, one line each.

A ``check(c)`` returns the problems of one schema (key, value, fix); :func:`raise_problems` turns a
list of them into one :class:`~frozen.errors.FrozenConfigError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from frozen.errors import FrozenConfigError

DEVICES = ("auto", "cpu", "cuda")


def failed(checks: Iterable[tuple[bool, str]]) -> list[str]:
    """The messages of the ``(ok, message)`` pairs that are not ok, in order."""
    return [message for ok, message in checks if not ok]


def prefixed(prefix: str, problems: list[str]) -> list[str]:
    """Problems of a nested schema under its full key (``lr ...`` -> ``trainer.lr ...``)."""
    return [f"{prefix}.{p}" for p in problems]


def one_of(name: str, value: Any, allowed: tuple[str, ...]) -> tuple[bool, str]:
    return value in allowed, f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {value!r}"


def raise_problems(problems: list[str]) -> None:
    """Raise one :class:`FrozenConfigError` listing every problem, one line each (nothing if none)."""
    if problems:
        raise FrozenConfigError("\n".join(problems))
