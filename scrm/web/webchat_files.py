"""Visitor uploads: read a multipart body within the inbox's size limit and check what the file really is."""

from __future__ import annotations

import fnmatch
import mimetypes
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from channels.web.adapter import WebChatAdapter
from scrm.domain import Attachment
from scrm.web.keys import CTX
from scrm.web.routing import ApiError

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
          (b"GIF89a", "image/gif"), (b"%PDF-", "application/pdf"), (b"PK\x03\x04", "application/zip"))
_ZIP_BASED = {"application/vnd.openxmlformats-officedocument.wordprocessingml.document",
              "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
              "application/vnd.openxmlformats-officedocument.presentationml.presentation"}
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\\/:*?\"<>|]+")
FORM_FIELDS = ("client_id", "text", "lang", "source")


def sniff(data: bytes, filename: str) -> str:
    """The file's type from its first bytes (the browser's Content-Type is not trusted)."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            guessed = mimetypes.guess_type(filename)[0]
            return guessed if mime == "application/zip" and guessed in _ZIP_BASED else mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:8192]
    if b"\x00" not in head:
        for codec in ("utf-8", "gb18030"):
            try:
                head.decode(codec)
            except UnicodeDecodeError:
                continue
            guessed = mimetypes.guess_type(filename)[0] or "text/plain"
            return guessed if guessed.startswith("text/") and guessed != "text/html" else "text/plain"
    return "application/octet-stream"


def allowed_type(mime: str, patterns: list[str]) -> bool:
    """True when `mime` matches one of the inbox's types ("image/*" style patterns allowed)."""
    return any(fnmatch.fnmatchcase(mime, p.strip().lower()) for p in patterns if p.strip())


def clean_filename(name: str | None) -> str:
    """A display name without path parts or control characters."""
    base = unquote(name or "file").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_NAME.sub("_", base).strip(" .") or "file"
    return base[-120:]


async def _read_parts(request: web.Request, limit: int, max_chars: int) -> tuple[dict[str, Any], bytearray | None, str]:
    """The form fields, the file's bytes (None without one) and its display name."""
    fields: dict[str, Any] = {}
    data: bytearray | None = None
    filename = "file"
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "file" and data is None:
            filename = clean_filename(part.filename)
            data = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise ApiError(413, f"file larger than {limit // 1024} KB", "too_large", max_bytes=limit)
        elif part.name in FORM_FIELDS:
            value = await part.read(decode=False)
            if len(value) > 4 * max_chars + 1024:
                raise ApiError(413, f"{part.name} is too long", "too_long")
            fields[part.name] = value.decode("utf-8", "replace")
    return fields, data, filename


async def read_upload(request: web.Request, adapter: WebChatAdapter,
                      check_fields: Callable[[dict[str, Any]], object] | None = None) -> tuple[dict[str, Any], Attachment]:
    """Read the form fields and the file; 413 past the inbox's limit, 415 for a type it does not take.
    `check_fields` refuses bad form fields before the file is stored (no file kept for a refused message)."""
    st: Any = adapter.settings
    limit = int(st.max_attachment_bytes)
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise ApiError(413, f"file larger than {limit // 1024} KB", "too_large", max_bytes=limit)
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "send the file as multipart/form-data in the field 'file'", "bad_upload")
    try:
        fields, data, filename = await _read_parts(request, limit, int(st.max_message_chars))
    except (HttpProcessingError, ValueError, RuntimeError, AssertionError, EOFError) as exc:
        # aiohttp's multipart reader raises these for a body that is not the multipart it claims to be (a
        # boundary over 70 characters, none at all, a missing closing one, a NUL in a part's header): the
        # sender's mistake, a 400.
        reason = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
        raise ApiError(400, f"malformed multipart body: {reason}"[:300], "bad_upload") from None
    if not data:
        raise ApiError(400, "no file in the field 'file'", "bad_upload")
    mime = sniff(bytes(data[:16384]), filename)
    named = mimetypes.guess_type(filename)[0]
    if named and named != mime and not (mime == "text/plain" and named.startswith("text/") and named != "text/html"):
        raise ApiError(415, f"the file's content ({mime}) does not match its name", "unsupported_type", mime_type=mime)
    if not allowed_type(mime, list(st.attachment_types)):
        raise ApiError(415, f"files of type {mime} are not accepted here", "unsupported_type", mime_type=mime)
    if check_fields is not None:
        check_fields(fields)
    # Stored under the extension of what it really is, so it is served with that type.
    key = await request.app[CTX].storage.save(bytes(data), filename=None, mime_type=mime)
    kind = "image" if mime.startswith("image/") else "file"
    return fields, Attachment(kind=kind, filename=filename, mime_type=mime, size=len(data), storage_key=key)
