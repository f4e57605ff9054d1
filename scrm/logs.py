"""Structured logging with a request id on every line (plain text or JSON lines)."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Bot API file URLs and similar carry credentials in the path: never let them reach a log line.
_SECRETS = re.compile(r"(bot\d+:[A-Za-z0-9_-]{20,}|access_token=[^&\s]+|secret=[^&\s]+)")


def redact(text: str) -> str:
    return _SECRETS.sub("[redacted]", text)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "msg": redact(record.getMessage()),
        }
        if record.exc_info:
            obj["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(obj, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(level: str = "INFO", json_logs: bool = False) -> None:
    """Configure the root logger once (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "httpx", "jieba", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
