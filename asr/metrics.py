"""Character error rate, normalised the way Earmark reports it: simplified script, no punctuation or spaces."""

from __future__ import annotations

import re
import unicodedata

from .transcribe import to_simplified

__all__ = ["cer", "normalize_for_cer"]

_DROP = re.compile(r"[\s\W_]+", re.UNICODE)


def normalize_for_cer(text: str) -> str:
    text = unicodedata.normalize("NFKC", to_simplified(text)).lower()
    return _DROP.sub("", text)


def cer(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over characters / reference length (after normalisation)."""
    r, h = normalize_for_cer(reference), normalize_for_cer(hypothesis)
    if not r:
        return 0.0 if not h else 1.0
    prev = list(range(len(h) + 1))
    for i, rc in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hc in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc))
        prev = cur
    return prev[-1] / len(r)
