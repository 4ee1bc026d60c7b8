"""Exceptions with one-line messages that name the problem and the fix."""

import errno
import os
import shutil


class FrozenError(Exception):
    """Base class for errors raised by this package."""


class FrozenConfigError(FrozenError, ValueError):
    """A bad name or value in a configuration (unknown backbone, k < 1, ...)."""


class LMNotFoundError(FrozenError, OSError):
    """A language model could not be found locally (and the network is off or unreachable)."""


class DataError(FrozenError, ValueError):
    """Bad data paths or patterns detected before any work starts (missing shard, empty pattern)."""


class InputError(FrozenError, ValueError):
    """A bad input to the library (an image, a prompt, a record's text), named with the fix."""


class ContextLengthError(InputError):
    """A prompt and its answer need more positions than the language model has."""


class WriteError(FrozenError, OSError):
    """A file could not be written (disk full, read-only file system, no permission): names the path and free space."""


WRITE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                errno.EROFS: "the file system is read-only"}
"""The ``OSError`` numbers that :func:`write_error` turns into one line (others propagate unchanged)."""


def free_space(path: str | os.PathLike) -> str:
    """``"1.2 MiB free on /data"``: ``shutil.disk_usage`` of ``path``'s nearest existing folder."""
    parent = os.path.abspath(path)
    while not os.path.isdir(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    try:
        free = float(shutil.disk_usage(parent).free)
    except OSError:
        return f"free space on {parent} unknown"
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            break
        free /= 1024
    return (f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}") + f" free on {parent}"


def write_error(path: str | os.PathLike, exc: OSError, kept: str = "") -> WriteError | None:
    """The one-line :class:`WriteError` for ``exc`` raised while writing ``path`` (``kept``: what is intact),
    or None when ``exc`` is not a full-disk / read-only / permission error."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    return WriteError(f"cannot write {os.fspath(path)}: {WRITE_ERRNOS[exc.errno]} ({free_space(path)})"
                      + (f"; {kept}" if kept else "") + "; free space, fix the permissions or write elsewhere")
