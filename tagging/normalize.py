"""Text normalisation that keeps character offsets: simplified script, lower case, half-width."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["normalize"]


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


#: full-width ASCII → half-width, ideographic space → space (a str.translate table)
_HALFWIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def normalize(text: str) -> str:
    """Same length as *text*, so offsets found in the result point into the original."""
    converted = _t2s().convert(text)
    if len(converted) != len(text):  # a phrase conversion changed the length: go char by char
        converted = "".join(_t2s().convert(ch) if len(_t2s().convert(ch)) == 1 else ch for ch in text)
    lowered = converted.translate(_HALFWIDTH).lower()
    # lower() may change the length of a few characters (İ → i̇): keep those as they are
    return lowered if len(lowered) == len(text) else "".join(c.lower() if len(c.lower()) == 1 else c for c in converted.translate(_HALFWIDTH))
