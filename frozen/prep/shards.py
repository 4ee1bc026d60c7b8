"""Writing shards: tar-safe keys, size/count-limited rotation, ``sizes.json``, image file reading.

Shards are plain webdataset tars ``{out}/{prefix}-{index:06d}.tar`` written with
:class:`webdataset.TarWriter`; each sample is ``{key}.{ext}`` members with the image stored as its
original encoded bytes. ``{out}/sizes.json`` maps each shard file name to its sample count (the
format open_clip and others read). Tars are written with a fixed mtime, so converting the same
input twice produces byte-identical shards.

A full disk, read-only folder or missing permission (:data:`frozen.errors.WRITE_ERRNOS`) stops the run
with one :class:`~frozen.errors.WriteError` line naming the path and the free space: the shard in progress
is removed, completed shards are kept (and named in the line), ``sizes.json`` is left as it was.

A sink never touches shards it did not write: existing ``{prefix}-*.tar`` files stop the run
(:func:`check_free`) unless ``overwrite`` is set, and other prefixes' files are never looked at.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from frozen.data.samples import check_image_bytes, decode_image, sniff_image_format
from frozen.errors import DataError, write_error

T = TypeVar("T")
# A progress wrapper: ``track(iterable, description, total)`` yields the iterable's items.
Track = Callable[[Iterable[T], str, "int | None"], Iterable[T]]

DEFAULT_MAX_COUNT = 10_000
DEFAULT_MAX_SIZE = 1_000_000_000  # bytes
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def no_track(items: Iterable[T], description: str = "", total: int | None = None) -> Iterable[T]:
    """The default :data:`Track`: no progress display."""
    return items


def make_key(*parts: Any) -> str:
    """A tar-safe sample key: parts joined by ``_``, anything but ``[A-Za-z0-9_-]`` replaced by ``-``.

    No dots (webdataset splits the extension at the key's first dot) and no slashes.
    """
    key = "_".join(_UNSAFE.sub("-", str(p)) for p in parts)
    if not key:
        raise ValueError("empty sample key")
    return key


def _tar_entry_size(n: int) -> int:
    return 512 + (n + 511) // 512 * 512  # header block + data padded to 512-byte blocks


def _own_shards(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}-\d{{6}}\.tar(\.tmp)?$")


def read_sizes(out_dir: str | Path) -> dict[str, int]:
    """``out_dir/sizes.json`` ({shard name: samples}); {} when absent, DataError when unreadable."""
    path = Path(out_dir) / "sizes.json"
    if not path.exists():
        return {}
    try:
        sizes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{str(path)!r} is not readable JSON ({exc}); fix or delete it (it only lists shard sizes)")
    if not isinstance(sizes, dict) or not all(isinstance(v, int) for v in sizes.values()):
        raise DataError(f"{str(path)!r} is not a {{shard name: sample count}} object; fix or delete it")
    return sizes


def check_free(out_dir: str | Path, prefixes: Iterable[str], overwrite: bool = False) -> None:
    """Raise DataError (before any work) if ``out_dir`` is not a usable folder, its ``sizes.json`` is
    unreadable, or -- unless ``overwrite`` -- it already holds shards of one of ``prefixes``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {str(out)!r} is a file; pass a folder for the shards")
    if not out.is_dir():
        return
    read_sizes(out)
    if overwrite:
        return
    names = sorted(p.name for p in out.iterdir())
    for prefix in prefixes:
        taken = [n for n in names if _own_shards(prefix).match(n)]
        if taken:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            raise DataError(f"--out {str(out)!r} already holds {taken[0]}{more} (prefix {prefix!r}); pass --overwrite "
                            f"to replace them, or choose another --out or --prefix")


class ShardSink:
    """Writes samples to ``{out_dir}/{prefix}-{i:06d}.tar``, starting a new shard before one would
    exceed ``max_count`` samples or ``max_size`` bytes (a single larger sample gets its own shard).

    Existing shards of ``prefix`` raise DataError unless ``overwrite``; with it, those this run
    does not rewrite are deleted on :meth:`close`. Shards are written as ``.tmp`` and renamed when
    complete; ``close`` updates ``sizes.json`` (other prefixes' entries kept). Duplicate keys raise
    ``ValueError`` (they would silently merge samples when reading).
    """

    def __init__(self, out_dir: str | Path, prefix: str, *, max_count: int = DEFAULT_MAX_COUNT,
                 max_size: int = DEFAULT_MAX_SIZE, overwrite: bool = False):
        if max_count < 1 or max_size < 1:
            raise ValueError(f"max_count and max_size must be >= 1, got {max_count}, {max_size}")
        check_free(out_dir, [prefix], overwrite)
        self.out_dir, self.prefix = Path(out_dir), prefix
        self.max_count, self.max_size = max_count, max_size
        self.overwrite = overwrite
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.counts: list[int] = []  # samples per finished or open shard
        self._writer: Any = None  # webdataset.TarWriter, imported when the first shard opens
        self._size = 0
        self._keys: set[str] = set()
        self._open: Path | None = None  # the .tmp file of the shard in progress
        self._failed = False  # a write failed: close() writes nothing more

    def shard_name(self, index: int) -> str:
        return f"{self.prefix}-{index:06d}.tar"

    def has(self, key: str) -> bool:
        """Whether a sample with this key was written in this run."""
        return key in self._keys

    @property
    def written(self) -> int:
        return sum(self.counts)

    def _finish_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            name = self.out_dir / self.shard_name(len(self.counts) - 1)
            os.replace(f"{name}.tmp", name)
            self._writer, self._open = None, None

    def _abandon(self, exc: OSError) -> Exception:
        """Remove the shard in progress and return the error to raise (a WriteError for a full or
        read-only disk, ``exc`` itself otherwise); completed shards stay."""
        path = self._open or self.out_dir
        writer, self._writer, self._open, self._failed = self._writer, None, None, True
        try:
            if writer is not None:
                writer.close()
        except OSError:
            pass  # the disk that failed the write may fail the close too; the file goes anyway
        if path != self.out_dir:
            _remove(Path(path))
        done = len(self.counts) - (path != self.out_dir)
        self.counts = self.counts[:done]
        kept = (f"kept {done} completed shard(s) {shard_pattern(self.prefix, done)} in {self.out_dir}, removed "
                f"the unfinished {Path(path).name}" if done else f"no completed shard of {self.prefix!r}")
        return write_error(path, exc, kept) or exc

    def write(self, key: str, files: dict[str, bytes | str]) -> None:
        """Write one sample; ``files`` maps extensions (``"png"``, ``"txt"``, ``"json"``) to content."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'; use make_key()")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in {self.prefix}")
        self._keys.add(key)
        data = {ext: v.encode("utf-8") if isinstance(v, str) else v for ext, v in files.items()}
        size = sum(_tar_entry_size(len(v)) for v in data.values())
        full = self._writer is not None and (self.counts[-1] >= self.max_count or self._size + size > self.max_size)
        try:
            if self._writer is None or full:
                self._finish_shard()
                # imported here: webdataset pulls in torch (~4 s), which argument checking should not wait for
                from webdataset import TarWriter

                self.counts.append(0)
                self._open = self.out_dir / f"{self.shard_name(len(self.counts) - 1)}.tmp"
                # encoder=False: values are already bytes. A fixed *int* mtime makes tars reproducible (a
                # float one would add a PAX header per file).
                self._writer = TarWriter(str(self._open), encoder=False, mtime=0)
                self._size = 0
            self._writer.write({"__key__": key, **data})
        except OSError as exc:
            raise self._abandon(exc) from exc
        self.counts[-1] += 1
        self._size += size

    def close(self) -> dict[str, int]:
        """Finish the last shard, update ``sizes.json`` and, with ``overwrite``, delete this prefix's shards
        from an earlier, larger run; returns ``{shard: count}``. After a failed write: only returns
        the completed shards (nothing more is written or deleted)."""
        if not self._failed:
            try:
                self._finish_shard()
            except OSError as exc:
                raise self._abandon(exc) from exc
        sizes = {self.shard_name(i): n for i, n in enumerate(self.counts)}
        if self._failed:
            return sizes
        if self.overwrite:
            own = _own_shards(self.prefix)
            for path in self.out_dir.iterdir():
                if own.match(path.name) and path.name not in sizes:
                    path.unlink()
        if sizes or self.overwrite or (self.out_dir / "sizes.json").exists():
            update_sizes_json(self.out_dir, self.prefix, sizes)
        return sizes

    def __enter__(self) -> "ShardSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def pattern(self) -> str | None:
        """The brace pattern of the shards written, e.g. ``captions-train-{000000..000003}.tar``."""
        return shard_pattern(self.prefix, len(self.counts))


def shard_pattern(prefix: str, num_shards: int) -> str | None:
    if num_shards == 0:
        return None
    if num_shards == 1:
        return f"{prefix}-000000.tar"
    return f"{prefix}-{{000000..{num_shards - 1:06d}}}.tar"


def update_sizes_json(out_dir: Path, prefix: str, sizes: dict[str, int]) -> None:
    """Replace ``prefix``'s entries in ``out_dir/sizes.json`` by ``sizes``, keeping other prefixes."""
    path = out_dir / "sizes.json"
    current = read_sizes(out_dir)
    own = re.compile(rf"^{re.escape(prefix)}-\d{{6}}\.tar$")
    merged = {k: v for k, v in current.items() if not own.match(k)} | sizes
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise write_error(path, exc, "the shards are complete; sizes.json is as it was") or exc from exc


def _remove(path: Path) -> None:
    """Delete ``path`` if it is there; a disk that refused a write may refuse this too (then it stays)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def read_image_file(path: str | Path, *, verify: bool = False) -> tuple[bytes, str] | str:
    """``(encoded bytes, extension)`` of an image file, or a skip reason.

    Reasons: ``missing_image_file``, ``not_image``, ``truncated_image`` (cheap checks on the bytes)
    and, with ``verify=True`` (full decode, slower), ``corrupt_image``. The extension comes from
    the magic bytes, not the file name, so a PNG named ``.jpg`` is stored as ``.png``.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "missing_image_file"
    bad = check_image_bytes(data)
    if bad is not None:
        return bad
    if verify:
        try:
            decode_image(data)
        except Exception:  # PIL raises many exception types for corrupt data
            return "corrupt_image"
    return data, sniff_image_format(data) or "img"


__all__ = [
    "ShardSink", "Track", "no_track", "make_key", "shard_pattern", "update_sizes_json",
    "read_image_file", "read_sizes", "check_free", "DEFAULT_MAX_COUNT", "DEFAULT_MAX_SIZE",
]
