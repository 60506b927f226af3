"""Errors raised by :mod:`asr`.

    AsrError
     ├── AudioError            the input is not usable audio
     │    ├── AudioDecodeError the decoder could not read it
     │    └── AudioTooLongError longer than the caller's limit
     └── ModelError            the model cannot be found, assembled or loaded
          └── ModelIntegrityError  a file's checksum or size is not what the manifest says
"""


class AsrError(Exception):
    """Base class of every error :mod:`asr` raises."""


class AudioError(AsrError):
    """The input is not usable audio."""


class AudioDecodeError(AudioError):
    """The decoder could not read the input as audio."""


class AudioTooLongError(AudioError):
    """The audio is longer than the allowed maximum."""


class ModelError(AsrError):
    """A speech model cannot be found, assembled or loaded."""


class ModelIntegrityError(ModelError):
    """A model file does not match its manifest (checksum or size)."""
