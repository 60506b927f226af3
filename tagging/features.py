"""Text features for the learned tagger: character n-grams over normalised text.

The same code turns text into ids at training time (torch) and at serving time (onnxruntime);
the vocabulary and settings are saved beside the weights, so a model always gets the features
it was trained on.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from .normalize import normalize

__all__ = ["Featurizer", "SPEAKER_IDS"]

#: speaker → id fed to the model beside the n-grams
SPEAKER_IDS = {None: 0, "customer": 1, "staff": 2}
_SPACE = re.compile(r"\s+")
_ASCII_WORD = re.compile(r"[a-z0-9]+")
_HAS_ASCII = re.compile(r"[a-z0-9]")


@dataclass
class Featurizer:
    """Character 1…``max_n``-grams (spaces collapsed) plus ASCII words, mapped through a vocabulary.

    Id 0 is padding and 1 is "unknown n-gram"; known n-grams start at 2.
    """

    max_n: int = 3
    max_len: int = 512  # n-grams per segment fed to the model (long segments are cut)
    vocab: dict[str, int] = field(default_factory=dict)

    def grams(self, text: str, *, normalized: bool = False) -> list[str]:
        norm = _SPACE.sub(" ", text if normalized else normalize(text)).strip()
        out = ["w:" + w for w in _ASCII_WORD.findall(norm)] if norm.isascii() or _HAS_ASCII.search(norm) else []
        padded = "^" + norm + "$"
        size = len(padded)
        for n in range(1, self.max_n + 1):
            out += [padded[i : i + n] for i in range(size - n + 1)]
        return out

    def fit(self, texts: Iterable[str], *, min_count: int = 1, max_size: int = 40000) -> Featurizer:
        counts = Counter(g for t in texts for g in set(self.grams(t)))
        kept = [g for g, c in counts.most_common(max_size) if c >= min_count]
        self.vocab = {g: i + 2 for i, g in enumerate(sorted(kept))}
        return self

    def ids(self, texts: list[str]) -> np.ndarray:
        """An int64 matrix [len(texts), L] of n-gram ids, 0-padded (L ≥ 1)."""
        rows = []
        get = self.vocab.get
        # one normalisation call for all texts (OpenCC per call costs more than per character)
        norms = normalize("\n".join(t.replace("\n", " ") for t in texts)).split("\n") if texts else []
        for t in norms:
            grams = self.grams(t, normalized=True)[: self.max_len]
            rows.append(list(map(get, grams, repeat(1, len(grams)))) or [1])
        width = max(len(r) for r in rows) if rows else 1
        out = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def to_dict(self) -> dict:
        return {"max_n": self.max_n, "max_len": self.max_len, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, data: dict) -> Featurizer:
        return cls(max_n=int(data["max_n"]), max_len=int(data["max_len"]), vocab=dict(data["vocab"]))
