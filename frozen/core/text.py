"""The one check every text boundary shares: can a string be written as UTF-8 (and so be tokenised)?

JSON's ``\\ud800`` escapes can spell a lone surrogate, which Python holds but neither UTF-8 files nor
tokenizers accept (a fast tokenizer raises a ``TypeError``). Prompts, the collator and the converters
name it in their own one-line error or skip reason.
"""

from __future__ import annotations


def unicode_problem(text: str) -> str | None:
    """``"a lone surrogate '\\ud800' at character 3"`` when ``text`` cannot be encoded as UTF-8, else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"a lone surrogate {text[err.start]!r} at character {err.start}"
    return None


__all__ = ["unicode_problem"]
