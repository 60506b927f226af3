"""The tag taxonomy: families (project, concern, intent), stable codes, labels and terms.

The default taxonomy is ``tagging/taxonomy/default.yaml``, under version control. Codes are
stable once published: CRMs store them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from .errors import TaxonomyError
from .types import KINDS

__all__ = ["TagCode", "Taxonomy", "TERM_TYPES", "load_yaml"]

#: term type → how much a match of that type is worth as evidence
TERM_TYPES = {"synonym": 0.95, "colloquial": 0.85, "phrase": 0.8, "asr_variant": 0.7, "pattern": 0.7, "pinyin": 0.6}
_CODE = re.compile(r"^[a-z][a-z0-9_]*$")


def load_yaml(path: str | Path | None, *, bundled: str, what: str) -> tuple[object, str]:
    """A YAML file's data and a name for it in messages; the bundled ``taxonomy/<bundled>`` when
    *path* is None. Unreadable or invalid files raise :class:`TaxonomyError` saying so."""
    if path is None:
        text = (resources.files("tagging") / "taxonomy" / bundled).read_text("utf-8")
        where = f"bundled {what}"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TaxonomyError(f"cannot read {what} {path}: {exc}") from exc
        where = str(path)
    try:
        return yaml.safe_load(text), where
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{where} is not valid YAML: {exc}") from exc


@dataclass(frozen=True)
class TagCode:
    kind: str
    code: str
    label: str
    label_en: str
    terms: tuple[tuple[str, str], ...]  # (term, term type)
    patterns: tuple[str, ...] = ()  # regular expressions over normalised text (term type "pattern")
    subsumed_by: tuple[str, ...] = ()  # codes of the same family that make this one redundant


class Taxonomy:
    def __init__(self, version: str, codes: list[TagCode], family_labels: dict[str, str]):
        self.version = version
        self.codes = {(c.kind, c.code): c for c in codes}
        self.family_labels = family_labels

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> Taxonomy:
        """Load a taxonomy YAML file; the bundled default when *path* is None."""
        data, where = load_yaml(path, bundled="default.yaml", what="taxonomy")
        return cls.from_dict(data, where=where)

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "taxonomy") -> Taxonomy:
        if not isinstance(data, dict) or "version" not in data or "families" not in data:
            raise TaxonomyError(f"{where}: expected a mapping with 'version' and 'families'")
        codes: list[TagCode] = []
        labels: dict[str, str] = {}
        for kind, family in data["families"].items():
            if kind not in KINDS:
                raise TaxonomyError(f"{where}: unknown family {kind!r}; expected one of {KINDS}")
            labels[kind] = family.get("label", kind)
            for code, spec in (family.get("codes") or {}).items():
                if not _CODE.match(code):
                    raise TaxonomyError(f"{where}: code {code!r} is not snake_case ASCII")
                if "label" not in spec:
                    raise TaxonomyError(f"{where}: {kind}.{code} has no label")
                terms: dict[str, str] = {}
                # the label is a synonym too; earlier types win when a term repeats
                for ttype, items in (
                    ("synonym", [spec["label"], *(spec.get("synonyms") or [])]),
                    ("phrase", spec.get("phrases") or []),
                    ("colloquial", spec.get("colloquial") or []),
                    ("asr_variant", spec.get("asr_variants") or []),
                ):
                    for term in items:
                        term = str(term).strip()
                        if term and term.lower() not in terms:
                            terms[term.lower()] = ttype
                patterns = tuple(str(p) for p in spec.get("patterns") or [])
                for p in patterns:
                    try:
                        re.compile(p)
                    except re.error as exc:
                        raise TaxonomyError(f"{where}: {kind}.{code} pattern {p!r} is not a valid regular expression: {exc}") from exc
                codes.append(
                    TagCode(
                        kind, code, spec["label"], spec.get("label_en", code), tuple(terms.items()), patterns,
                        tuple(str(c) for c in spec.get("subsumed_by") or []),
                    )
                )
        return cls(str(data["version"]), codes, labels)

    # -- per-tenant overrides ------------------------------------------------------------------
    def with_overrides(self, overrides: dict, *, label: str) -> Taxonomy:
        """A copy with a tenant's changes, without code changes or a redeploy::

            {"synonyms": {"project.thermage": ["热玛吉Pro"]},   # more terms for existing codes
             "disabled": ["intent.referral"],                  # codes this tenant does not use
             "codes": [{"kind": "project", "code": "hydrafacial", "label": "水光清洁",
                        "synonyms": […], "colloquial": […], "phrases": […], "patterns": […]}]}

        The version becomes ``<base version>+<label>``. Raises :class:`TaxonomyError` saying what
        is wrong.
        """
        if not isinstance(overrides, dict):
            raise TaxonomyError("overrides: expected a JSON object")
        unknown = set(overrides) - {"synonyms", "disabled", "codes"}
        if unknown:
            raise TaxonomyError(f"overrides: unknown keys {sorted(unknown)}; expected synonyms, disabled, codes")
        codes = dict(self.codes)

        def key_of(ref: object, where: str) -> tuple[str, str]:
            kind, _, code = str(ref).partition(".")
            if (kind, code) not in codes:
                raise TaxonomyError(f"overrides.{where}: {ref!r} is not a code of this taxonomy (expected 'kind.code')")
            return kind, code

        for spec in overrides.get("codes") or []:
            if not isinstance(spec, dict):
                raise TaxonomyError("overrides.codes: each item must be an object")
            kind, code = str(spec.get("kind", "")), str(spec.get("code", ""))
            if kind not in KINDS:
                raise TaxonomyError(f"overrides.codes: kind {kind!r} is not one of {KINDS}")
            if not _CODE.match(code):
                raise TaxonomyError(f"overrides.codes: code {code!r} is not snake_case ASCII")
            if (kind, code) in codes:
                raise TaxonomyError(f"overrides.codes: {kind}.{code} exists already; add synonyms to it instead")
            if not str(spec.get("label", "")).strip():
                raise TaxonomyError(f"overrides.codes: {kind}.{code} has no label")
            added = Taxonomy.from_dict(
                {"version": "override", "families": {kind: {"codes": {code: {k: v for k, v in spec.items() if k not in ("kind", "code")}}}}},
                where=f"overrides.codes[{kind}.{code}]",
            )
            codes[(kind, code)] = added.codes[(kind, code)]
        for ref, terms in (overrides.get("synonyms") or {}).items():
            kind, code = key_of(ref, "synonyms")
            if not isinstance(terms, list) or not all(isinstance(t, str) and t.strip() for t in terms):
                raise TaxonomyError(f"overrides.synonyms.{ref}: expected a list of non-empty strings")
            tc = codes[(kind, code)]
            have = {t for t, _ in tc.terms}
            extra = tuple((t.strip().lower(), "synonym") for t in terms if t.strip().lower() not in have)
            codes[(kind, code)] = TagCode(tc.kind, tc.code, tc.label, tc.label_en, tc.terms + extra, tc.patterns, tc.subsumed_by)
        for ref in overrides.get("disabled") or []:
            codes.pop(key_of(ref, "disabled"), None)
        return Taxonomy(f"{self.version}+{label}", list(codes.values()), dict(self.family_labels))

    def to_dict(self) -> dict:
        """The taxonomy as the API shows it."""
        families = {}
        for kind in KINDS:
            families[kind] = {
                "label": self.family_labels.get(kind, kind),
                "codes": [
                    {
                        "code": c.code, "label": c.label, "label_en": c.label_en,
                        "terms": [{"term": t, "type": ty} for t, ty in c.terms],
                        "patterns": list(c.patterns),
                    }
                    for c in self.of_kind(kind)
                ],
            }
        return {"version": self.version, "families": families}

    # -- queries ---------------------------------------------------------------------------
    def get(self, kind: str, code: str) -> TagCode | None:
        return self.codes.get((kind, code))

    def drop_subsumed(self, found: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Codes made redundant by a more specific code found beside them (色斑 beside 黄褐斑)."""
        return {
            (k, c) for k, c in found
            if (tc := self.get(k, c)) is not None and any((k, other) in found for other in tc.subsumed_by)
        }

    def of_kind(self, kind: str) -> list[TagCode]:
        return [c for c in self.codes.values() if c.kind == kind]

    def hotwords(self, *, kinds: tuple[str, ...] = ("project",), max_chars: int = 80) -> str:
        """Labels to hint the recogniser with (Whisper's prompt is short: keep it to the names
        it gets wrong most, the treatments)."""
        words: list[str] = []
        used = 0
        for kind in kinds:
            for c in self.of_kind(kind):
                if used + len(c.label) + 1 > max_chars:
                    return "，".join(words)
                words.append(c.label)
                used += len(c.label) + 1
        return "，".join(words)
