"""Count real captions' lengths in an LM's tokens, for ``make bench ARGS="--caption-lengths FILE"``.

    python scripts/caption_lengths.py --cc3m-tsv Validation_GCC-1.1.0-Validation.tsv --out lengths.json
    python scripts/caption_lengths.py --coco annotations/captions_train2014.json --lm gpt2 --out lengths.json
    python scripts/caption_lengths.py --karpathy dataset_coco.json --out lengths.json

Each caption is counted as training counts it (the template ``" {caption}"``, the LM's tokenizer, + EOS).
Writes ``{"source", "sha256", "tokenizer", "template", "captions", "counts": {length: captions}, "stats"}``
and prints the statistics. The built-in table of ``train_packing`` (frozen.bench.caption_lengths) came
from the first command with the default LM.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from frozen.bench.caption_lengths import describe, histogram, read_captions, token_counts  # noqa: E402
from frozen.cli import report  # noqa: E402
from frozen.core.files import sha256_of  # noqa: E402
from frozen.errors import FrozenError  # noqa: E402
from frozen.eval.store import write_all  # noqa: E402
from frozen.model.lm import load_tokenizer, resolve_lm_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cc3m-tsv", type=Path, help="Conceptual Captions TSV (caption<TAB>url per line)")
    src.add_argument("--coco", type=Path, help="COCO captions_*.json (annotations[].caption)")
    src.add_argument("--karpathy", type=Path, help="Karpathy's dataset_coco.json (images[].sentences[].raw)")
    p.add_argument("--lm", default="smollm2-135m-instruct-gguf", help="the LM whose tokenizer counts")
    p.add_argument("--template", default=" {caption}", help="data.caption_template of the run")
    p.add_argument("--out", type=Path, default=None, help="write the table here (JSON)")
    args = p.parse_args(argv)
    kind, path = next((k, v) for k, v in (("cc3m_tsv", args.cc3m_tsv), ("coco", args.coco),
                                          ("karpathy", args.karpathy)) if v is not None)
    try:
        captions = read_captions(path, kind)
        tokenizer = load_tokenizer(resolve_lm_path(args.lm))
        counts = histogram(token_counts(captions, tokenizer, args.template))
        table = {"source": str(path), "sha256": sha256_of(path), "tokenizer": args.lm, "template": args.template,
                 "captions": len(captions), "counts": counts, "stats": describe(counts)}
        if args.out is not None:
            write_all(args.out.parent, {args.out.name: json.dumps(table, indent=1) + "\n"})
    except FrozenError as err:
        report(err)
    stats = table["stats"]
    print(f"{len(captions)} captions, tokens (+EOS) mean {stats['mean']:.2f}, median {stats['median']:g}, "
          f"p90 {stats['p90']:g}, p99 {stats['p99']:g}, max {stats['max']}")
    print("counts:", json.dumps(counts))
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
