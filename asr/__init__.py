"""Speech to text for Earmark: decode audio, find speech, transcribe with faster-whisper.

Knows audio and models only: no HTTP, no database, no environment variables. Everything arrives
as explicit arguments; results are dataclasses that record the model and options used.
"""

from .audio import SAMPLE_RATE, AudioInfo, decode, iter_decode, probe
from .errors import (
    AsrError,
    AudioDecodeError,
    AudioError,
    AudioTooLongError,
    ModelError,
    ModelIntegrityError,
)
from .metrics import cer, normalize_for_cer
from .models import ModelStatus, available_manifests, resolve_model, verify_model
from . import transcribe
from .transcribe import (
    DEFAULT_PROMPT_ZH,
    Segment,
    TranscribeOptions,
    Transcriber,
    TranscriptionInfo,
    to_simplified,
)

__all__ = [
    "SAMPLE_RATE",
    "AsrError",
    "AudioDecodeError",
    "AudioError",
    "AudioInfo",
    "AudioTooLongError",
    "DEFAULT_PROMPT_ZH",
    "ModelError",
    "ModelIntegrityError",
    "ModelStatus",
    "Segment",
    "TranscribeOptions",
    "Transcriber",
    "TranscriptionInfo",
    "available_manifests",
    "cer",
    "normalize_for_cer",
    "decode",
    "iter_decode",
    "probe",
    "resolve_model",
    "to_simplified",
    "verify_model",
]
