"""`make lmms-eval`'s data step: the easy-VQA test shards -> data/lmms_easyvqa/test.jsonl, the offline
lmms-eval task's file (lmms_tasks/frozen_easyvqa reads it by that path, relative to the working directory)."""

from __future__ import annotations

import argparse
import sys

from frozen.errors import FrozenError
from frozen.eval.lmms import DATASET_FILE, EASYVQA_SHARDS, write_easyvqa_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default="data", help="where make shards wrote easyvqa/ (default: data)")
    parser.add_argument("--shards", default=EASYVQA_SHARDS, help=f"shard pattern under --data-root ({EASYVQA_SHARDS})")
    parser.add_argument("--out", default=f"data/{DATASET_FILE}", help=f"output file (default: data/{DATASET_FILE})")
    args = parser.parse_args()
    try:
        n = write_easyvqa_dataset(args.out, data_root=args.data_root, shards=args.shards)
    except FrozenError as exc:  # one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {n} questions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
