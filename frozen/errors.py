"""Exceptions with one-line messages that name the problem and the fix."""

import errno
import os
import re
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
                errno.EFBIG: "the file is over the file size limit (ulimit -f)",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                errno.EROFS: "the file system is read-only"}
"""The ``OSError`` numbers that :func:`write_error` turns into one line (others propagate unchanged)."""

# A write that fails under torch.save's zip writer surfaces as a RuntimeError: "[enforce fail at
# inline_container.cc] . unexpected pos 576 vs 534" (writing to a path, or through a Python file whose
# OSError is then its __context__), or "PytorchStreamWriter failed writing file ...: file write failed".
_TORCH_WRITER = re.compile(r"unexpected pos|iostream error|PytorchStreamWriter failed|file write failed")
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")  # Rust writers (safetensors): "I/O error: ... (os error 28)"


def write_failure(exc: BaseException) -> str | None:
    """Why writing failed, when ``exc`` (or an exception it was raised from or during) is a full disk, a file
    size limit, a read-only file system or a permission error; else None (a bug, raised unchanged)."""
    seen: set[int] = set()
    torch_writer = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            return WRITE_ERRNOS[exc.errno]
        found = _OS_ERROR_IN_TEXT.search(str(exc))
        if found and int(found.group(1)) in WRITE_ERRNOS:
            return WRITE_ERRNOS[int(found.group(1))]
        if isinstance(exc, RuntimeError) and _TORCH_WRITER.search(str(exc)) and torch_writer is None:
            torch_writer = f"the write was cut short ({' '.join(str(exc).split())[:80]}: a full disk?)"
        exc = exc.__cause__ or exc.__context__
    return torch_writer


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


def write_error(path: str | os.PathLike, exc: BaseException, kept: str = "") -> WriteError | None:
    """The one-line :class:`WriteError` for ``exc`` raised while writing ``path`` (``kept``: what is intact),
    or None when ``exc`` is not a :func:`write_failure` (full disk, file size limit, read-only, permission)."""
    reason = write_failure(exc)
    if reason is None:
        return None
    return WriteError(f"cannot write {os.fspath(path)}: {reason} ({free_space(path)})"
                      + (f"; {kept}" if kept else "") + "; free space, fix the permissions or write elsewhere")
