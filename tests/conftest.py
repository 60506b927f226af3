"""Shared fixtures: the real shipped Whisper model, the committed clips, an app per test."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import pytest

import asr
import tagging

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def model_cache() -> Path:
    path = Path(os.environ.get("EARMARK_TEST_MODEL_CACHE", Path(tempfile.gettempdir()) / "earmark-test-models"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def model_dir(model_cache) -> Path:
    return asr.resolve_model("whisper-base", model_cache)


@pytest.fixture(scope="session")
def transcriber(model_dir) -> asr.Transcriber:
    return asr.Transcriber(model_dir, device="cpu", cpu_threads=2)


@pytest.fixture(scope="session")
def diarizer():
    from asr.speakers import Diarizer

    return Diarizer(device="cpu")


@pytest.fixture(scope="session")
def taxonomy() -> tagging.Taxonomy:
    return tagging.Taxonomy.load()


@pytest.fixture(scope="session")
def tagger(taxonomy) -> tagging.RuleTagger:
    return tagging.RuleTagger(taxonomy)


@pytest.fixture(scope="session")
def clips() -> dict[str, dict]:
    with open(DATA / "clips.tsv", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


@pytest.fixture(scope="session")
def zh_options(taxonomy) -> asr.TranscribeOptions:
    return asr.TranscribeOptions(language="zh", hotwords=taxonomy.hotwords())
