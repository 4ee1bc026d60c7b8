"""``make app``: start the few-shot Streamlit app on 127.0.0.1 and print its address.

    python scripts/app.py                       # the demo's model (outputs/demo/frozen_vqa/export, then frozen)
    python scripts/app.py --load outputs/run    # any export, training run directory or hub repo id
    python scripts/app.py --port 8600           # default: 8501, or a free port when that one is taken

The launcher is :func:`frozen.app.launch.main`; this repository's outputs/ holds the demo's default model.
"""

from __future__ import annotations

import sys
from pathlib import Path

from frozen.app.launch import main

if __name__ == "__main__":
    sys.exit(main(root=Path(__file__).resolve().parents[1]))
