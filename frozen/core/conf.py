"""Where the YAML presets (conf/) are: the one lookup that library code uses to read them.

conf/ sits at the top of the repository, where Hydra's entry points (train.py, evaluate.py) read it;
a built wheel carries the same files as the package ``frozen.conf`` (pyproject.toml maps it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def conf_dir() -> Path:
    """The presets folder: ``frozen.conf`` where the package carries it (a wheel, an editable install),
    else the conf/ beside the package (a checkout on ``PYTHONPATH``)."""
    spec = importlib.util.find_spec("frozen.conf")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "conf"
