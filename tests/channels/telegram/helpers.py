"""Telegram test data: Bot API update fixtures and webhook requests as Telegram sends them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scrm.domain import WebhookRequest

FIXTURES = Path(__file__).parent / "fixtures"
WEBHOOK_SECRET = "s3cr3t-token_for-tests"


def load_fixture(name: str) -> dict[str, Any]:
    """A Bot API update from fixtures/<name>.json."""
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def webhook_request(body: bytes | dict[str, Any], secret: str | None = WEBHOOK_SECRET) -> WebhookRequest:
    """A webhook POST as Telegram sends it."""
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode("utf-8")
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["x-telegram-bot-api-secret-token"] = secret
    return WebhookRequest(method="POST", path="/webhooks/telegram/7", query={}, headers=headers, body=raw)
