"""Write docs/scaling.md: memory per GPU and time per step under ddp and fsdp, before renting machines.

Computed, not measured on GPUs: LM parameter counts and shapes from the models' published configs,
the bench's FLOPs-per-step formula (``frozen.train.flops.analytic_step_flops``), and two numbers measured here
on CPU in seconds (NF-ResNet-50's forward FLOPs at 224 px with torch's FLOP counter, and the bytes it
saves for backward). Every other input is an assumption stated in the document.
``--check`` exits 1 if docs/scaling.md differs from what this script writes (the test suite runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frozen.scaling import measure_vision, render

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "docs" / "scaling.md"))
    p.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = p.parse_args(argv)
    text = render(*measure_vision())
    out = Path(args.out)
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is out of date: run python scripts/scaling_plan.py", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
