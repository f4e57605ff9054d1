"""The application's own bookkeeping inside a conversation's bot_state (hidden from the flow engine): read by
the bot's rounds and by a consumer batch's preload alike, so neither imports the other for it."""

from __future__ import annotations

from typing import Any

APP_KEY = "_app"


def answered_up_to(bot_state: dict[str, Any] | None) -> int:
    """The id of the last customer message the bot answered in the conversation (0: none yet)."""
    app = (bot_state or {}).get(APP_KEY) or {}
    return int(app.get("last_in") or 0)
