"""Find, assemble and verify speech models.

A model is named (``whisper-base``: a manifest in the :mod:`models` package says which installed
PyPI packages hold its files and their checksums) or given as a path to any faster-whisper
(CTranslate2) model directory an operator supplies. Named models are assembled once into a cache
directory, checked against the manifest, and never downloaded from a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import ModelError, ModelIntegrityError

logger = logging.getLogger(__name__)

__all__ = ["ModelManifest", "ModelStatus", "available_manifests", "load_manifest", "resolve_model", "verify_model"]

REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


@dataclass(frozen=True)
class FilePart:
    package: str
    path: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str
    size: int
    parts: tuple[FilePart, ...]


@dataclass(frozen=True)
class ModelManifest:
    name: str
    description: str
    pip: tuple[str, ...]
    files: tuple[ModelFile, ...]


@dataclass
class ModelStatus:
    name: str
    path: Path | None
    ok: bool
    problems: list[str] = field(default_factory=list)
    description: str = ""


def available_manifests() -> list[str]:
    """Names of the models this installation knows how to assemble."""
    root = resources.files("models")
    return sorted(
        p.name[: -len(".json")]
        for p in root.iterdir()
        if p.name.endswith(".json") and p.name.startswith("whisper")
    )


def load_manifest(name: str) -> ModelManifest:
    res = resources.files("models") / f"{name}.json"
    if not res.is_file():
        known = ", ".join(available_manifests()) or "none"
        raise ModelError(f"unknown model name {name!r}; known names: {known}; or give a directory path")
    raw = json.loads(res.read_text(encoding="utf-8"))
    files = tuple(
        ModelFile(
            name=fname,
            sha256=spec["sha256"],
            size=int(spec["size"]),
            parts=tuple(FilePart(**p) for p in spec["parts"]),
        )
        for fname, spec in raw["files"].items()
    )
    return ModelManifest(raw["name"], raw.get("description", ""), tuple(raw.get("pip", [])), files)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_dir(package: str, manifest: ModelManifest) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model {manifest.name!r} needs the Python package {package!r}, which is not installed; "
            f"install: pip install {' '.join(manifest.pip)}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _assemble_file(mf: ModelFile, manifest: ModelManifest, dest: Path) -> None:
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{mf.name}.", dir=dest)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in mf.parts:
                src = _package_dir(part.package, manifest) / part.path
                if not src.is_file():
                    raise ModelError(f"{src} is missing from package {part.package!r}")
                with open(src, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                        out.write(chunk)
        digest = h.hexdigest()
        if digest != mf.sha256:
            raise ModelIntegrityError(
                f"{mf.name} assembled from {[p.package for p in mf.parts]} has sha256 {digest}, "
                f"expected {mf.sha256}: the installed packages are not the versions the manifest names"
            )
        os.replace(tmp, dest / mf.name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_files(manifest: ModelManifest, directory: Path, *, deep: bool) -> list[str]:
    problems = []
    for mf in manifest.files:
        p = directory / mf.name
        if not p.is_file():
            problems.append(f"{mf.name} missing")
        elif p.stat().st_size != mf.size:
            problems.append(f"{mf.name} has {p.stat().st_size} bytes, expected {mf.size}")
        elif deep and _sha256(p) != mf.sha256:
            problems.append(f"{mf.name} checksum differs from the manifest")
    return problems


def _stamp(directory: Path) -> Path:
    return directory / ".earmark-verified"


def resolve_model(name_or_path: str, cache_dir: Path) -> Path:
    """Return a faster-whisper model directory for a model name or a directory path.

    Named models are assembled into ``cache_dir/<name>`` the first time (checksummed) and reused
    after that; a directory path is checked for the files faster-whisper needs.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir() or os.sep in name_or_path:
        if not candidate.is_dir():
            raise ModelError(f"model directory {candidate} does not exist")
        missing = [f for f in REQUIRED_FILES if not (candidate / f).is_file()]
        if missing:
            raise ModelError(
                f"{candidate} is not a faster-whisper model directory: missing {', '.join(missing)}"
            )
        return candidate
    manifest = load_manifest(name_or_path)
    directory = Path(cache_dir) / manifest.name
    if _stamp(directory).is_file() and not _check_files(manifest, directory, deep=False):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    logger.info("assembling model %s into %s", manifest.name, directory)
    for mf in manifest.files:
        target = directory / mf.name
        if target.is_file() and target.stat().st_size == mf.size and _sha256(target) == mf.sha256:
            continue
        _assemble_file(mf, manifest, directory)
    _stamp(directory).write_text(json.dumps({"manifest": manifest.name}), encoding="utf-8")
    return directory


def verify_model(name_or_path: str, cache_dir: Path) -> ModelStatus:
    """Check a model without raising: assemble it if needed, then verify every checksum."""
    try:
        directory = resolve_model(name_or_path, cache_dir)
    except ModelError as exc:
        return ModelStatus(name_or_path, None, False, [str(exc)])
    try:
        manifest = load_manifest(name_or_path)
    except ModelError:
        return ModelStatus(name_or_path, directory, True, [], "operator-supplied directory")
    problems = _check_files(manifest, directory, deep=True)
    return ModelStatus(manifest.name, directory, not problems, problems, manifest.description)
