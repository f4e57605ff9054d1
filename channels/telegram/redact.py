"""Keep bot tokens out of log lines written by python-telegram-bot (and httpx, if used).

PTB logs its API URLs (which embed the token) at DEBUG when a Bot is created; a filter on those
loggers rewrites any "<bot id>:<secret>" to "<bot id>:<redacted>" before a handler sees it.
"""

from __future__ import annotations

import logging
import re

TOKEN_RE = re.compile(r"(\d{3,}):[A-Za-z0-9_-]{20,}")
REDACTED_LOGGERS = ("telegram.Bot", "telegram.ext.ExtBot", "telegram.request", "httpx", "httpcore")


def redact(text: str) -> str:
    """Replace every bot token in text by its public bot id."""
    return TOKEN_RE.sub(r"\1:<redacted>", text)


class TokenRedactingFilter(logging.Filter):
    """Formats the record once and redacts tokens from the final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = TokenRedactingFilter()


def install() -> None:
    """Attach the filter to the loggers that may see Bot API URLs (idempotent)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
