"""The app in headless Chromium: pick a preset, Generate, wait for the answer, screenshot (:func:`drive`).

Drives Debian's ``chromium`` through Playwright's Python package (``executable_path``; Playwright's own
browser download is not needed). Used by ``scripts/app_screenshot.py`` and the browser test
(tests/app/test_browser.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL_HINT = ("install a browser and its driver: `apt-get install -y chromium` (as root) and "
                "`pip install playwright==1.65.2` (the dev extra), or set FROZEN_CHROMIUM to a Chromium binary")


def chromium_path() -> str | None:
    """``FROZEN_CHROMIUM``, else the first of chromium / chromium-browser / google-chrome on PATH."""
    if os.environ.get("FROZEN_CHROMIUM"):
        return os.environ["FROZEN_CHROMIUM"]
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def drive(url: str, screenshot: Path, *, preset: str = "VQA 1-shot", executable: str | None = None,
          timeout_s: float = 180.0) -> str:
    """Open ``url``, choose ``preset``, click Generate, wait for the answer, save ``screenshot``.

    Returns the page's text."""
    from playwright.sync_api import sync_playwright  # the dev extra's optional dependency: only when driving

    executable = executable or chromium_path()
    if executable is None:
        raise RuntimeError(f"no Chromium found: {INSTALL_HINT}")
    ms = timeout_s * 1000
    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="frozen_chromium_") as profile:
        # A fresh profile each time; launch_persistent_context is Playwright's way to name it.
        browser = pw.chromium.launch_persistent_context(profile, executable_path=executable, headless=True,
                                                        args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1000})
        try:
            page = browser.new_page()
            page.goto(url, timeout=ms)
            page.get_by_text("The prompt as the model sees it").wait_for(timeout=ms)  # the model has loaded
            page.get_by_role("combobox", name="Preset").click()
            page.get_by_role("option", name=preset, exact=True).click()
            # The preset's turns are in the editor once its last turn's text area shows up again.
            page.get_by_role("button", name="Generate").wait_for(timeout=ms)
            page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=ms)
            page.get_by_role("button", name="Generate").click()
            page.get_by_text("Next-token probabilities at the first answer step").wait_for(timeout=ms)
            page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=ms)
            page.wait_for_timeout(500)  # let the chart finish drawing before the screenshot
            # Streamlit scrolls inside its main block, so a full-page shot needs a window as tall as that block.
            height = page.evaluate("Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
                                   "[data-testid=stMainBlockContainer]')].map(e => e.scrollHeight), 1000)")
            for _ in range(2):  # a taller window reflows the page once more
                page.set_viewport_size({"width": 1400, "height": int(height) + 80})
                page.wait_for_timeout(500)
                height = page.evaluate("Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
                                       "[data-testid=stMainBlockContainer]')].map(e => e.scrollHeight), 1000)")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            return page.inner_text("body")
        finally:
            browser.close()
