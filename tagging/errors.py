"""Errors raised by :mod:`tagging`.

    TaggingError
     └── TaxonomyError   the taxonomy file is missing, malformed or inconsistent
"""


class TaggingError(Exception):
    """Base class of every error :mod:`tagging` raises."""


class TaxonomyError(TaggingError):
    """The taxonomy is missing, malformed or inconsistent."""
