"""The interactive few-shot app (Streamlit): `make app` (scripts/app.py calls ``launch.main``).

Owns the page (``streamlit_app.py``, UI only), what it does without the UI (``logic.py``: finding the
export, presets in the evaluation's prompt formats, the no-image comparison, next-token probabilities),
starting and stopping its server (``launch.py``) and driving it in headless Chromium (``browser.py``).
May import: ``frozen.model``, ``frozen.config``, ``frozen.eval.episodes`` (the binding presets); nothing
imports it.
"""
