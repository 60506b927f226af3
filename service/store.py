"""The audio store: local files under the data directory, written durably before we answer."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from .errors import PayloadTooLarge

_EXT = re.compile(r"^[a-z0-9]{1,5}$")


def safe_ext(filename: str | None) -> str:
    """A lower-case extension from a client's filename, or '' (never a path component)."""
    if not filename:
        return ""
    ext = Path(filename.replace("\\", "/")).suffix.lower().lstrip(".")
    return ext if _EXT.match(ext) else ""


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise ValueError(f"store key escapes the store: {key!r}")
        return p

    def put_stream(self, key: str, src: BinaryIO, *, max_bytes: int) -> tuple[int, str]:
        """Copy *src* to *key* durably (temp file, fsync, rename). Returns (size, sha256)."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(
                            f"upload is larger than the limit of {max_bytes} bytes",
                            type="/problems/upload-too-large",
                        )
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return size, h.hexdigest()

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass
