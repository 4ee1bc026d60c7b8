"""Drive the app in headless Chromium: pick a preset, Generate, wait for the answer, screenshot.

    python scripts/app_screenshot.py --load outputs/demo/frozen_vqa/export --out docs/app.png

Starts ``streamlit run`` on a free 127.0.0.1 port (:mod:`frozen.app.launch`), drives Debian's ``chromium``
(:func:`frozen.app.browser.drive`), prints the page's text and stops the server by its PID.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frozen.app import launch
from frozen.app.browser import drive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", required=True, help="an export, a training run directory or a hub repo id")
    parser.add_argument("--out", type=Path, default=Path("docs/app.png"))
    parser.add_argument("--preset", default="VQA 1-shot")
    args = parser.parse_args(argv)
    proc, url = launch.start(args.load)
    try:
        text = drive(url, args.out, preset=args.preset)
    finally:
        launch.stop(proc)
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
