"""Shard lists: a pattern relative to ``data_root`` becomes the ordered list of tar files to read.

Shards are tar files of samples (``{key}.png|jpg`` + ``{key}.txt`` and/or ``{key}.json``), written
by ``scripts/make_shards.py`` or img2dataset; ``sizes.json`` beside them gives their sample counts.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from braceexpand import braceexpand

from frozen.data.samples import is_remote
from frozen.errors import DataError

MAKE_SHARDS_HINT = (
    "create shards with `python scripts/make_shards.py easyvqa --out data/easyvqa` "
    "(or the coco / vqav2 / captions converters, see docs/data.md), or fix data_root / the pattern"
)


def resolve_shards(spec: str | Sequence[str], data_root: str) -> list[str]:
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
