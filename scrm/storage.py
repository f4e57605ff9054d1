"""File storage for attachments: a local directory (the one storage interface every channel uses)."""

from __future__ import annotations

import asyncio
import mimetypes
import re
import uuid
from pathlib import Path

_SAFE_EXT = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_KEY = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{32}(\.[A-Za-z0-9]{1,8})?$")


class LocalFileStorage:
    """Files under one directory, addressed by opaque keys (never by user-supplied names)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    async def save(self, data: bytes, *, filename: str | None, mime_type: str | None) -> str:
        ext = Path(filename).suffix if filename else ""
        if not _SAFE_EXT.match(ext or ""):
            ext = mimetypes.guess_extension(mime_type or "") or ""
            ext = ext if _SAFE_EXT.match(ext) else ""
        name = uuid.uuid4().hex
        key = f"{name[:2]}/{name}{ext}"
        path = self.root / key
        await asyncio.to_thread(self._write, path, data)
        return key

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def path_for(self, key: str) -> Path:
        """Filesystem path of a key; KeyError for anything that is not a key we issued."""
        if not _KEY.match(key):
            raise KeyError(key)
        return self.root / key

    async def load(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise KeyError(key) from exc
