"""Text normalisation that keeps character offsets: simplified script, lower case, half-width."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["normalize"]


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def _halfwidth(ch: str) -> str:
    code = ord(ch)
    if 0xFF01 <= code <= 0xFF5E:
        return chr(code - 0xFEE0)
    if code == 0x3000:
        return " "
    return ch


def normalize(text: str) -> str:
    """Same length as *text*, so offsets found in the result point into the original."""
    converted = _t2s().convert(text)
    if len(converted) != len(text):  # a phrase conversion changed the length: go char by char
        converted = "".join(_t2s().convert(ch) if len(_t2s().convert(ch)) == 1 else ch for ch in text)
    return "".join(_halfwidth(ch) for ch in converted).lower()
