"""The interactive few-shot app (Streamlit): `make app` (scripts/app.py starts it).

Owns the page (``streamlit_app.py``, UI only) and what it does without the UI (``logic.py``: finding the
export, presets in the evaluation's prompt formats, the no-image comparison, next-token probabilities).
May import: ``frozen.model``, ``frozen.config``, ``frozen.eval.episodes`` (the binding presets); nothing
imports it.
"""
