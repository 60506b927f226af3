"""Text to tags for Earmark: a versioned taxonomy and taggers that return evidence.

Knows text and taxonomy only: no HTTP, no database, no environment variables.
"""

from .compliance import ComplianceChecker, ComplianceFlag, ComplianceRule
from .errors import TaggingError, TaxonomyError
from .normalize import normalize
from .rules import TAGGER_VERSION, RuleTagger
from .taxonomy import TagCode, Taxonomy
from .types import KINDS, Evidence, TagAssignment, TextSegment

__all__ = [
    "KINDS",
    "TAGGER_VERSION",
    "ComplianceChecker",
    "ComplianceFlag",
    "ComplianceRule",
    "Evidence",
    "RuleTagger",
    "TagAssignment",
    "TagCode",
    "TaggingError",
    "Taxonomy",
    "TaxonomyError",
    "TextSegment",
    "normalize",
]
