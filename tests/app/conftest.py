"""Fixtures of the app tests: a tiny export (tiny GPT-2 + small CNN at 32 px, k=2) and the page under AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

APP_FILE = Path(__file__).resolve().parents[2] / "frozen" / "app" / "streamlit_app.py"


@pytest.fixture(scope="session")
def tiny_export(tiny_gpt2, tmp_path_factory) -> Path:
    from frozen import FrozenModel

    torch.manual_seed(0)
    model = FrozenModel.from_pretrained(str(tiny_gpt2), vision="tiny_cnn", image_size=32)
    return model.save_pretrained(tmp_path_factory.mktemp("app") / "export")


@pytest.fixture(scope="session")
def export_model(tiny_export):
    """The tiny export loaded the way the app loads it, to compute expected answers independently."""
    from frozen import FrozenModel

    return FrozenModel.from_pretrained(tiny_export).eval()


@pytest.fixture
def page(monkeypatch):
    """``page(load)``: the app run once under AppTest with ``--load load`` (via FROZEN_APP_LOAD)."""
    import sys

    from streamlit.testing.v1 import AppTest

    def run(load) -> "AppTest":
        monkeypatch.setenv("FROZEN_APP_LOAD", str(load))
        return AppTest.from_file(str(APP_FILE), default_timeout=120).run()

    # Streamlit installs the page as sys.modules["__main__"] and leaves it there; a later test that
    # spawns processes (torch.multiprocessing) would make each child re-run the page as its main module.
    main = sys.modules["__main__"]
    yield run
    sys.modules["__main__"] = main
