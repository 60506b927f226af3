"""Tagger versions: which exist, which one is active, switching and rolling back.

Versions live in two places:

- **bundled**: ``models/tagger/<version>/`` inside the installed package (read-only; trained from
  the committed training set and shipped with Earmark);
- **local**: ``<local dir>/<version>/``, where ``earmark train`` writes the versions it builds
  from QA corrections (the service's data directory, ``data/models/tagger`` by default).

``<local dir>/active.json`` says which version tags (``{"active": "...", "history": [...]}``);
without it the newest bundled version does. The version name ``rules`` means the rule tagger
alone. Activation and rollback write ``active.json`` atomically; a running service notices the
change and reloads (see :meth:`TaggerRegistry.stamp`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import TaggingError
from .learned import HybridTagger, LearnedModel
from .rules import RuleTagger
from .taxonomy import Taxonomy

__all__ = ["RULES", "TaggerRegistry", "TaggerVersion", "bundled_dir"]

RULES = "rules"


def bundled_dir() -> Path:
    return Path(str(resources.files("models"))) / "tagger"


@dataclass(frozen=True)
class TaggerVersion:
    version: str
    directory: Path | None  # None for the rules-only version
    bundled: bool
    created_at: str = ""
    training_items: int = 0
    eval: dict | None = None  # family → F1 on the evaluation sets, when the card recorded them


class TaggerRegistry:
    def __init__(self, local_dir: str | Path, *, bundled: str | Path | None = None):
        self.local_dir = Path(local_dir)
        self.bundled = Path(bundled) if bundled is not None else bundled_dir()

    # -- listing ---------------------------------------------------------------------------
    def versions(self) -> list[TaggerVersion]:
        out = [TaggerVersion(RULES, None, True)]
        for root, bundled in ((self.bundled, True), (self.local_dir, False)):
            if not root.is_dir():
                continue
            for d in sorted(root.iterdir()):
                meta_path = d / "tagger.json"
                if not meta_path.is_file():
                    continue
                try:
                    meta = json.loads(meta_path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    continue
                out.append(TaggerVersion(
                    meta.get("version", d.name), d, bundled, meta.get("created_at", ""),
                    int(meta.get("training", {}).get("items", 0)), meta.get("eval"),
                ))
        return out

    def get(self, version: str) -> TaggerVersion:
        for v in self.versions():
            if v.version == version:
                return v
        known = ", ".join(v.version for v in self.versions())
        raise TaggingError(f"no tagger version {version!r}; known versions: {known}")

    # -- the active version ----------------------------------------------------------------
    @property
    def _state_path(self) -> Path:
        return self.local_dir / "active.json"

    def _state(self) -> dict:
        try:
            return json.loads(self._state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise TaggingError(f"cannot read {self._state_path}: {exc}") from exc

    def default_version(self) -> str:
        bundled = [v for v in self.versions() if v.bundled and v.directory is not None]
        return max(bundled, key=lambda v: (v.created_at, v.version)).version if bundled else RULES

    def active(self) -> str:
        return self._state().get("active") or self.default_version()

    def history(self) -> list[str]:
        return list(self._state().get("history") or [])

    def stamp(self) -> float:
        """Changes whenever the active version is switched (the file's modification time)."""
        try:
            return self._state_path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _write_state(self, state: dict) -> None:
        self.local_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.local_dir, prefix=".active-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_path)

    def activate(self, version: str) -> str:
        """Make *version* the active one; the previous one goes on the history (for rollback)."""
        self.get(version)  # must exist
        current = self.active()
        if version == current:
            return current
        history = (self.history() + [current])[-20:]
        self._write_state({"active": version, "history": history})
        return current

    def rollback(self) -> str:
        """Back to the version active before the last switch; returns it."""
        history = self.history()
        if not history:
            raise TaggingError("nothing to roll back to: no earlier active version is recorded")
        previous = history.pop()
        self.get(previous)
        self._write_state({"active": previous, "history": history})
        return previous

    # -- loading ---------------------------------------------------------------------------
    def load(self, taxonomy: Taxonomy, version: str | None = None):
        """The tagger for *version* (default: the active one) over *taxonomy*."""
        v = self.get(version or self.active())
        if v.directory is None:
            return RuleTagger(taxonomy)
        return HybridTagger(taxonomy, LearnedModel(v.directory))
