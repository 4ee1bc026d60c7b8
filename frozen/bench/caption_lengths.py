"""Caption lengths in LM tokens: read from real caption files, counted with the LM's tokenizer.

``train_packing`` draws its batches' caption lengths from :data:`CC3M_VAL_SMOLLM2`, a histogram
measured on the 15,833 captions of Conceptual Captions' validation file
(``Validation_GCC-1.1.0-Validation.tsv``, Sharma et al., ACL 2018) with SmolLM2-135M-Instruct's
tokenizer, counted as training counts them: the caption through the presets' template
``" {caption}"`` plus the EOS target (docs/bench.md: source, checksum, statistics).
``scripts/caption_lengths.py`` recounts it from that TSV, or from COCO's ``captions_*.json`` or
Karpathy's ``dataset_coco.json``, for any LM, and ``make bench ARGS="--caption-lengths FILE"`` uses the result.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from frozen.errors import FrozenError

# Tokens per caption (caption through " {caption}" + EOS) -> number of captions, SmolLM2-135M-Instruct's
# tokenizer, CC3M validation TSV (sha256 below); written by scripts/caption_lengths.py --cc3m-tsv.
CC3M_VAL_SMOLLM2: dict[str, Any] = {
    "source": "Conceptual Captions (CC3M) validation, Validation_GCC-1.1.0-Validation.tsv",
    "sha256": "12559c4517bcc76eb9987c29267826ce4d3aa0ca14fa8ee1e536d542d64e81dd",
    "tokenizer": "SmolLM2-135M-Instruct",
    "template": " {caption}",
    "captions": 15833,
    "counts": {
        6: 1034, 7: 1641, 8: 1728, 9: 1732, 10: 1552, 11: 1321, 12: 1166, 13: 955, 14: 863, 15: 664,
        16: 640, 17: 455, 18: 425, 19: 309, 20: 285, 21: 219, 22: 174, 23: 143, 24: 92, 25: 74, 26: 78,
        27: 53, 28: 42, 29: 43, 30: 31, 31: 19, 32: 31, 33: 16, 34: 12, 35: 8, 36: 3, 37: 6, 38: 5, 39: 4,
        40: 4, 41: 1, 42: 1, 43: 1, 44: 2, 48: 1,
    },
}


def read_captions(path: Path, kind: str) -> list[str]:
    """The captions of one file: ``kind`` is ``cc3m_tsv`` (caption<TAB>url per line), ``coco``
    (``annotations[].caption``) or ``karpathy`` (``images[].sentences[].raw``). Empty captions are dropped."""
    try:
        if kind == "cc3m_tsv":
            with open(path, encoding="utf-8", newline="") as f:
                rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
            captions = [row[0] for row in rows if row]
        elif kind in ("coco", "karpathy"):
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if kind == "coco":
                captions = [a["caption"] for a in data["annotations"]]
            else:
                captions = [s["raw"] for image in data["images"] for s in image["sentences"]]
        else:
            raise ValueError(f"unknown caption file kind {kind!r}")
    except FileNotFoundError:
        raise FrozenError(f"{path}: no such file; give the caption file's path") from None
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise FrozenError(f"{path}: not a {kind} caption file ({type(e).__name__}: {e}); "
                          "--cc3m-tsv takes caption<TAB>url lines, --coco a captions_*.json, "
                          "--karpathy a dataset_coco.json") from None
    captions = [c.strip() for c in captions if isinstance(c, str) and c.strip()]
    if not captions:
        raise FrozenError(f"{path}: no captions found in this {kind} file")
    return captions


def token_counts(captions: Sequence[str], tokenizer: Any, template: str = " {caption}") -> list[int]:
    """Tokens each caption costs in training: ``template`` filled, tokenised without special tokens, + EOS."""
    texts = [template.format(caption=c) for c in captions]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(x) + 1 for x in ids]


def histogram(counts: Iterable[int]) -> dict[int, int]:
    """Length -> number of captions, sorted by length."""
    return dict(sorted(Counter(counts).items()))


def describe(table: dict[int, int]) -> dict[str, float]:
    """Mean, median, 90th/99th percentile and max of a length histogram."""
    values = [n for n, c in sorted(table.items()) for _ in range(c)]
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"captions": len(values), "mean": statistics.fmean(values), "median": statistics.median(values),
            "p90": q[89], "p99": q[98], "max": max(values)}


def load_table(path: Path | None) -> dict[str, Any]:
    """A table written by scripts/caption_lengths.py (``counts`` keyed by length), or the built-in CC3M one."""
    if path is None:
        return CC3M_VAL_SMOLLM2
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        counts = {int(n): int(c) for n, c in data["counts"].items()}
    except FileNotFoundError:
        raise FrozenError(f"--caption-lengths {path}: no such file; write it with scripts/caption_lengths.py") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FrozenError(f"--caption-lengths {path}: not a caption-length table ({type(e).__name__}: {e}); "
                          "write it with scripts/caption_lengths.py") from None
    if not counts or min(counts) < 2 or min(counts.values()) < 0 or not sum(counts.values()):
        raise FrozenError(f"--caption-lengths {path}: counts must map lengths >= 2 (a token + EOS) to "
                          "non-negative numbers of captions, not all zero")
    return {**data, "counts": counts}
