"""The app in a real browser: `streamlit run` on 127.0.0.1 with a tiny export, driven by headless Chromium.

Needs Debian's `chromium` (or FROZEN_CHROMIUM) and the `playwright` package (the dev extra). Without
them the test is skipped with the install command, except under CI=true, where it fails. The
screenshot goes to FROZEN_APP_SCREENSHOT when set (e.g. docs/app.png), else to the test's tmp dir.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from frozen.app import browser, launch


@pytest.fixture
def chromium() -> str:
    """The browser's path; a skip (elsewhere) or a failure (CI=true) naming what is missing."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    executable = browser.chromium_path()
    if executable is None or not Path(executable).exists():
        missing.append("a Chromium binary")
    if missing:
        message = f"missing {' and '.join(missing)}: {browser.INSTALL_HINT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: the browser test must run; {message}")
        pytest.skip(message)
    return executable


def test_launcher_without_a_model_says_what_to_do(tmp_path, capsys):
    assert launch.main(["--load", str(tmp_path / "missing")]) == 2
    assert "make app: --load" in capsys.readouterr().err


def test_app_answers_in_a_real_browser(chromium, tiny_export, tmp_path):
    shot = Path(os.environ.get("FROZEN_APP_SCREENSHOT") or tmp_path / "app.png")
    log = tmp_path / "streamlit.log"
    proc, url = launch.start(str(tiny_export), log=log)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        text = browser.drive(url, shot, preset="VQA 1-shot", executable=chromium)
    finally:
        launch.stop(proc)
    assert proc.poll() is not None, "the server is still running"
    assert "The prompt as the model sees it" in text and "With the images" in text
    assert "No image: the same prompt, images removed" in text
    assert re.search(r"Answer: '.*'", text), text[-2000:]
    from frozen.app import logic as L

    # the 1-shot preset's demonstration for the page's default query (the gallery's first image)
    demonstration = L.preset_turns("VQA 1-shot", L.gallery()[0][1])[0].text
    assert demonstration.startswith("Q: ") and demonstration in text
    assert "Next-token probabilities at the first answer step" in text
    assert "Traceback" not in text and "Error" not in text
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
