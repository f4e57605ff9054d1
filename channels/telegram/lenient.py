"""Older or partial updates: a message is not lost because one nested object is incomplete.

Newer Bot API versions made fields required that older updates (and some self-hosted Bot API
servers or relays) do not send: `file_unique_id` on files, `type`/`is_video` on stickers, a game's
`photo`. python-telegram-bot then refuses the whole update. Here the parts it cannot read are
dropped one by one until the rest parses: text, caption, sender and chat survive; what was dropped
is named in an "unsupported content" note, and the raw update is kept for the agent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from telegram import Bot, Update

from channels.telegram.inbound import ParsedUpdate, external_id
from scrm.domain import ContentType, Inbound, InboundMessage

MESSAGE_KEYS = ("message", "edited_message", "channel_post", "edited_channel_post")
# Without these a message cannot be placed in a conversation: such an update is refused.
ESSENTIAL = frozenset({"message_id", "date", "chat", "from", "sender_chat", "text", "caption", "entities",
                       "caption_entities", "message_thread_id", "edit_date"})
_PARSE_ERRORS = (TypeError, ValueError, KeyError, AttributeError)


@dataclass
class Repaired:
    """An update that parsed once the named parts were dropped."""

    update: Update
    dropped: list[str] = field(default_factory=list)  # e.g. ["sticker", "reply_to_message.photo"]
    raw: dict[str, Any] = field(default_factory=dict)


def _parses(data: dict[str, Any], bot: Bot) -> Update | None:
    try:
        return Update.de_json(data, bot)
    except _PARSE_ERRORS:
        return None


def repair(data: dict[str, Any], bot: Bot) -> Repaired | None:
    """Drop the unreadable parts of a message update until it parses; None when even its essentials fail.

    Each optional field is tried on its own next to the essentials, so one broken object (a sticker
    without `file_unique_id`) is found without guessing, and every readable one is kept.
    """
    key = next((k for k in MESSAGE_KEYS if isinstance(data.get(k), dict)), None)
    if key is None:
        return None
    message: dict[str, Any] = dict(data[key])
    if not isinstance(message.get("chat"), dict) or "message_id" not in message:
        return None
    base = {k: v for k, v in message.items() if k in ESSENTIAL}
    if _parses({"update_id": data.get("update_id", 0), key: base}, bot) is None:
        return None  # no chat, no date...: nothing to place the message with
    dropped: list[str] = []
    for name in [k for k in message if k not in ESSENTIAL]:
        if _parses({"update_id": data.get("update_id", 0), key: {**base, name: message[name]}}, bot) is None:
            del message[name]
            dropped.append(name)
    update = _parses({**data, key: message}, bot)
    if update is None:
        return None
    return Repaired(update=update, dropped=dropped, raw=data)


def with_unsupported(parsed: ParsedUpdate, repaired: Repaired) -> ParsedUpdate:
    """Mark the message of a repaired update: a note of what was dropped, the raw update kept."""
    note = "unsupported Telegram content: " + ", ".join(repaired.dropped)
    items: list[Inbound] = []
    for item in parsed.items:
        if not isinstance(item, InboundMessage):
            items.append(item)
            continue
        payload = {**item.payload, "unsupported": list(repaired.dropped), "raw_update": repaired.raw,
                   "warnings": [f"{note} (kept in the raw update)"]}
        changes: dict[str, Any] = {"payload": payload}
        raw_message: dict[str, Any] = next((repaired.raw[k] for k in MESSAGE_KEYS if isinstance(repaired.raw.get(k), dict)), {})
        caption = raw_message.get("caption")
        if item.content_type == ContentType.EVENT:  # nothing readable was left but perhaps a caption
            readable = caption if isinstance(caption, str) and caption else None
            changes["text"] = readable or f"[{note}]"
            changes["content_type"] = ContentType.TEXT if readable else ContentType.EVENT
        reply = raw_message.get("reply_to_message")
        if item.reply_to_external_id is None and isinstance(reply, dict) and "message_id" in reply:
            chat = raw_message.get("chat") or {}
            changes["reply_to_external_id"] = external_id(chat.get("id", ""), reply["message_id"])
        items.append(dataclasses.replace(item, **changes))
    parsed.items = items
    return parsed
