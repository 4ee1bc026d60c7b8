"""Compare runs side by side: ``make compare RUNS="dir ..." [OUT=outputs/compare] [X=model.num_prefix_tokens]``.

Each dir is a training run (validation.json), an evaluation run (results.json) or a Hydra multirun folder
(its jobs). Writes OUT/compare.md (protocol flags, the config values that vary, the same cells across runs)
and OUT/compare.png (the metric against a numeric config value, 95% intervals). The work is
:mod:`frozen.eval.compare` and :mod:`frozen.eval.compare_report`.
"""

from __future__ import annotations

import argparse
import sys

from frozen.cli import report
from frozen.errors import FrozenError
from frozen.eval.compare_report import compare


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", help="run folders or Hydra multirun folders")
    p.add_argument("--out", default="outputs/compare", help="where compare.md and compare.png go")
    p.add_argument("--x", default=None, help="the config value on the figure's x axis (default: chosen)")
    args = p.parse_args(argv)
    try:
        done = compare(args.runs, args.out, x=args.x)
    except FrozenError as err:
        report(err)
    print(done["markdown"].read_text())
    print(f"wrote {done['markdown']} and {done['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
