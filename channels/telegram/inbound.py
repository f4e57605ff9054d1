"""Telegram Update -> InboundMessage / ChannelEvent (translation only, no I/O).

The dedup key of a message is f"{chat_id}:{message_id}": Telegram message ids are unique per chat,
and the same id arrives through the webhook and through getUpdates, so both ways in agree.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from telegram import (
    CallbackQuery,
    Chat,
    ChatMemberUpdated,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)

from scrm.domain import (
    Attachment,
    ChannelEvent,
    ChannelEventKind,
    ContactProfile,
    ContentType,
    Inbound,
    InboundMessage,
)

log = logging.getLogger(__name__)

GROUP_CHAT_TYPES = frozenset({Chat.GROUP, Chat.SUPERGROUP, Chat.CHANNEL})
UNREACHABLE_STATUSES = frozenset({"kicked", "left"})


@dataclass
class ParsedUpdate:
    """The neutral items of one update, plus callback queries to answer once they are stored."""

    update_id: int
    items: list[Inbound] = field(default_factory=list)
    callback_query_id: str | None = None  # answer with answerCallbackQuery after storing
    ignored: str | None = None  # why nothing was produced (logged, acknowledged)


def external_id(chat_id: int | str, message_id: int) -> str:
    """The dedup key of a Telegram message."""
    return f"{chat_id}:{message_id}"


def profile_of(user: User | None) -> ContactProfile | None:
    """The contact's name, username and language from a Telegram `from` user."""
    if user is None:
        return None
    name = " ".join(p for p in (user.first_name, user.last_name) if p) or None
    return ContactProfile(name=name, username=user.username, language=user.language_code)


def parse_update(update: Update, *, accept_groups: bool = False) -> ParsedUpdate:
    """Translate one Update; unknown or ignored updates give no items and a reason."""
    parsed = ParsedUpdate(update.update_id)
    message = update.message or update.channel_post
    edited = update.edited_message or update.edited_channel_post
    if message is not None:
        if _ignored_chat(message.chat, accept_groups, parsed):
            return parsed
        parsed.items.append(_message(message, update.update_id))
    elif edited is not None:
        if _ignored_chat(edited.chat, accept_groups, parsed):
            return parsed
        parsed.items.append(_edit(edited))
    elif update.callback_query is not None:
        _callback(update.callback_query, update.update_id, accept_groups, parsed)
    elif update.my_chat_member is not None:
        member = update.my_chat_member
        if _ignored_chat(member.chat, accept_groups, parsed):
            return parsed
        parsed.items.append(_membership(member))
    else:
        parsed.ignored = "unsupported update type"
    return parsed


def _ignored_chat(chat: Chat, accept_groups: bool, parsed: ParsedUpdate) -> bool:
    if chat.type in GROUP_CHAT_TYPES and not accept_groups:
        parsed.ignored = f"{chat.type} chat (accept_groups is off)"
        return True
    return False


def _sender(chat: Chat, user: User | None) -> tuple[str, ContactProfile | None]:
    """In a private chat the contact is the user; in a group or channel it is the chat itself."""
    if chat.type in GROUP_CHAT_TYPES:
        return str(chat.id), ContactProfile(name=chat.title, username=chat.username)
    return str(user.id if user else chat.id), profile_of(user)


def _message(msg: Message, update_id: int) -> InboundMessage:
    sender_id, profile = _sender(msg.chat, msg.from_user)
    payload: dict[str, Any] = {
        "chat_id": msg.chat.id,
        "chat_type": msg.chat.type,
        "update_id": update_id,
        "message_id": msg.message_id,
    }
    if msg.chat.type in GROUP_CHAT_TYPES and msg.from_user is not None:
        payload["from_id"] = msg.from_user.id
        payload["from_name"] = msg.from_user.full_name
    content_type, text, attachments = _content(msg, payload)
    if msg.text and content_type == ContentType.TEXT:
        start_param = _start_param(msg.text)
        if start_param:
            payload["start_param"] = start_param
            profile = _with(profile, attributes={"source": start_param})
    if msg.contact is not None and msg.from_user is not None and msg.contact.user_id == msg.from_user.id:
        profile = _with(profile, phone=msg.contact.phone_number)
    reply = msg.reply_to_message
    return InboundMessage(
        external_id=external_id(msg.chat.id, msg.message_id),
        sender_id=sender_id,
        text=text,
        content_type=content_type,
        attachments=attachments,
        profile=profile,
        sent_at=msg.date,
        reply_to_external_id=external_id(msg.chat.id, reply.message_id) if reply else None,
        payload=payload,
        auto_submitted=bool(msg.from_user and msg.from_user.is_bot),
    )


def _with(profile: ContactProfile | None, **changes: Any) -> ContactProfile:
    base = profile or ContactProfile()
    if "attributes" in changes:
        changes["attributes"] = {**base.attributes, **changes["attributes"]}
    return dataclasses.replace(base, **changes)


def _start_param(text: str) -> str | None:
    """The deep-link payload of "/start <payload>" (also "/start@bot <payload>" in groups)."""
    command, _, rest = text.strip().partition(" ")
    if command.split("@", 1)[0] != "/start":
        return None
    return rest.strip() or None


def _file(kind: str, obj: Any, *, filename: str | None = None, mime_type: str | None = None) -> Attachment:
    return Attachment(
        kind=kind,
        filename=filename,
        mime_type=mime_type,
        size=obj.file_size,
        source={"file_id": obj.file_id, "file_unique_id": obj.file_unique_id, "file_size": obj.file_size},
    )


def _content(msg: Message, payload: dict[str, Any]) -> tuple[str, str | None, tuple[Attachment, ...]]:
    """(content_type, text, attachments) of a message; media carry their caption as text."""
    caption = msg.caption
    if msg.photo:
        largest = max(msg.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return ContentType.IMAGE, caption, (_file("image", largest, mime_type="image/jpeg"),)
    if msg.sticker is not None:
        s = msg.sticker
        mime = "video/webm" if s.is_video else "application/x-tgsticker" if s.is_animated else "image/webp"
        payload["sticker"] = {"emoji": s.emoji, "set_name": s.set_name}
        return ContentType.STICKER, s.emoji, (_file("sticker", s, mime_type=mime),)
    if msg.voice is not None:
        payload["duration"] = _seconds(msg.voice, "duration")
        return ContentType.VOICE, caption, (_file("voice", msg.voice, mime_type=msg.voice.mime_type or "audio/ogg"),)
    if msg.audio is not None:
        a = msg.audio
        payload["duration"] = _seconds(a, "duration")
        att = _file("audio", a, filename=a.file_name, mime_type=a.mime_type)
        return ContentType.AUDIO, caption or _join(a.performer, a.title, sep=" - "), (att,)
    if msg.video_note is not None:
        payload["video_note"] = True
        payload["duration"] = _seconds(msg.video_note, "duration")
        return ContentType.VIDEO, None, (_file("video", msg.video_note, mime_type="video/mp4"),)
    clip = msg.video or msg.animation
    if clip is not None:
        att = _file("video", clip, filename=clip.file_name, mime_type=clip.mime_type or "video/mp4")
        return ContentType.VIDEO, caption, (att,)
    if msg.document is not None:
        d = msg.document
        return ContentType.FILE, caption, (_file("file", d, filename=d.file_name, mime_type=d.mime_type),)
    if msg.venue is not None:
        venue, loc = msg.venue, msg.venue.location
        payload["venue"] = {"title": venue.title, "address": venue.address, "latitude": loc.latitude,
                            "longitude": loc.longitude, "foursquare_id": venue.foursquare_id}
        return ContentType.LOCATION, f"📍 {venue.title}\n{venue.address}\n{loc.latitude},{loc.longitude}", ()
    if msg.location is not None:
        loc = msg.location
        payload["location"] = {"latitude": loc.latitude, "longitude": loc.longitude}
        return ContentType.LOCATION, f"📍 {loc.latitude},{loc.longitude}", ()
    if msg.contact is not None:
        c = msg.contact
        payload["contact"] = {"phone_number": c.phone_number, "first_name": c.first_name,
                              "last_name": c.last_name, "user_id": c.user_id}
        return ContentType.CONTACT_CARD, _join(_join(c.first_name, c.last_name), c.phone_number), ()
    if msg.text is not None:
        return ContentType.TEXT, msg.text, ()
    if msg.dice is not None:
        return ContentType.TEXT, f"{msg.dice.emoji} {msg.dice.value}", ()
    if msg.poll is not None:
        payload["unsupported"] = "poll"
        return ContentType.TEXT, f"[poll] {msg.poll.question}", ()
    payload["unsupported"] = "message"
    return ContentType.EVENT, "[unsupported Telegram message]", ()


def _join(*parts: str | None, sep: str = " ") -> str | None:
    return sep.join(p for p in parts if p) or None


def _seconds(obj: Any, attr: str) -> int | None:
    """A duration in seconds without touching PTB 22's deprecated int/timedelta property."""
    value = getattr(obj, f"_{attr}", None)
    return int(value.total_seconds()) if value is not None else None


def _edit(msg: Message) -> ChannelEvent:
    sender_id, profile = _sender(msg.chat, msg.from_user)
    return ChannelEvent(
        kind=ChannelEventKind.MESSAGE_EDITED,
        sender_id=sender_id,
        external_id=external_id(msg.chat.id, msg.message_id),
        profile=profile,
        occurred_at=msg.edit_date or msg.date,
        data={"text": msg.text if msg.text is not None else msg.caption},
    )


def _callback(cq: CallbackQuery, update_id: int, accept_groups: bool, parsed: ParsedUpdate) -> None:
    chat = cq.message.chat if cq.message is not None else None
    if chat is not None and _ignored_chat(chat, accept_groups, parsed):
        return
    if cq.data is None:  # game / inline-mode callbacks carry no choice
        parsed.ignored = "callback_query without data"
        parsed.callback_query_id = cq.id
        return
    if chat is not None:
        sender_id, profile = _sender(chat, cq.from_user)
    else:
        sender_id, profile = str(cq.from_user.id), profile_of(cq.from_user)
    payload: dict[str, Any] = {"choice": cq.data, "update_id": update_id, "callback_query_id": cq.id}
    reply_to = None
    if cq.message is not None:
        payload["chat_id"] = chat.id if chat else None
        payload["chat_type"] = chat.type if chat else None
        reply_to = external_id(cq.message.chat.id, cq.message.message_id)
    markup = getattr(cq.message, "reply_markup", None)
    parsed.items.append(
        InboundMessage(
            external_id=f"cb:{cq.id}",
            sender_id=sender_id,
            text=_button_label(markup, cq.data) or cq.data,
            content_type=ContentType.POSTBACK,
            profile=profile,
            reply_to_external_id=reply_to,
            payload=payload,
        )
    )
    parsed.callback_query_id = cq.id


def _button_label(markup: InlineKeyboardMarkup | None, data: str) -> str | None:
    """The label the customer tapped, found on the keyboard of the message it belongs to."""
    if not isinstance(markup, InlineKeyboardMarkup):
        return None
    for row in markup.inline_keyboard:
        for button in row:
            if button.callback_data == data:
                return button.text
    return None


def _membership(member: ChatMemberUpdated) -> ChannelEvent:
    status = member.new_chat_member.status
    sender_id, profile = _sender(member.chat, member.from_user)
    data: Mapping[str, Any]
    if status in UNREACHABLE_STATUSES:
        kind = ChannelEventKind.CONTACT_UNREACHABLE
        reason = "blocked the bot" if status == "kicked" else "left the chat"
        data = {"reason": reason, "status": status}
    else:
        kind = ChannelEventKind.CONTACT_REACHABLE
        data = {"status": status}
    return ChannelEvent(kind=kind, sender_id=sender_id, profile=profile, occurred_at=member.date, data=data)
