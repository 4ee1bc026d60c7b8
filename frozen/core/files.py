"""File facts shared by training and evaluation: a file's sha256 (checkpoint checksums, results provenance),
and the atomic, power-loss-safe write of checkpoints and exports."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks (checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | Path) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk: without it a power loss can undo the rename."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, fsync it, rename it onto ``path``, fsync the folder.

    The order is what survives a power loss: the bytes are on disk before the rename publishes them (else
    the new name can point at an empty file once an older one was rotated away), and the rename is on
    disk before the caller goes on (deleting what the new file replaces). A failure, a full disk
    included, removes the temporary file and leaves an earlier ``path`` as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make an export unreadable to others
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
