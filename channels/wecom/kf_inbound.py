"""One kf/sync_msg item -> what the application stores: items for the ingest sink, plus a WeCom effect.

origin 3 is the customer (a message), 5 a servicer replying from the WeCom client (stored as an agent
message, not as the customer), 4 an event whose ids sit inside `event{}`. Effects are what ingest
cannot express (servicer messages, session state, welcome codes); the application applies them.
Items carry the msgid as their external id, so a page pulled twice is stored once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

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

CUSTOMER, EVENT, SERVICER = 3, 4, 5
MEDIA_KINDS = {"image": ("image", ContentType.IMAGE, "image/jpeg"), "voice": ("voice", ContentType.VOICE, "audio/amr"),
               "video": ("video", ContentType.VIDEO, "video/mp4"), "file": ("file", ContentType.FILE, None)}
# msg_send_fail fail_type -> what the agent reads (PROTOCOL.md §3; unknown values: plain "failed").
FAIL_TYPES = {
    0: "未知原因 / unknown reason",
    1: "客服账号已删除 / the kf account was deleted",
    2: "应用已关闭 / the app is closed",
    4: "会话已过期，超过48小时 / session expired (over 48 h)",
    5: "会话已关闭 / session closed",
    6: "超过5条限制 / over the 5-message limit",
    7: "未绑定视频号 / no 视频号 bound",
    8: "主体未验证 / subject not verified",
    9: "未绑定视频号且主体未验证 / no 视频号 bound and subject not verified",
    10: "用户拒收 / the customer refuses messages",
}
RECALLED = "（消息已撤回 / message recalled）"


@dataclass(frozen=True)
class KfRecord:
    """One sync_msg item translated; `ignored` names why nothing is stored (logged)."""

    msgid: str
    external_userid: str | None
    items: tuple[Inbound, ...] = ()
    effect: Mapping[str, Any] | None = None
    ignored: str | None = None


def item_id(item: Mapping[str, Any]) -> str:
    """The item's msgid; items without one (model samples) get a digest of their content."""
    msgid = item.get("msgid")
    if isinstance(msgid, str) and msgid:
        return msgid
    raw = json.dumps(item, sort_keys=True, ensure_ascii=False).encode()
    return "nomsgid-" + hashlib.sha1(raw).hexdigest()


def translate(item: Mapping[str, Any]) -> KfRecord:
    """Translate one msg_list entry; unknown message types become "unsupported" notes, unknown events are ignored."""
    msgid = item_id(item)
    msgtype = str(item.get("msgtype") or "")
    if msgtype == "event":
        return _event(msgid, item)
    origin = _int(item.get("origin"), CUSTOMER)
    customer = _str(item.get("external_userid"))
    if not customer:
        log.warning("wecom kf: ignoring %s item %s without external_userid", msgtype, msgid)
        return KfRecord(msgid, None, ignored="no external_userid")
    message = message_of(msgid, customer, item)
    if origin == SERVICER:
        servicer = _str(item.get("servicer_userid"))
        return KfRecord(msgid, customer, effect={"kind": "servicer_message", "servicer_userid": servicer,
                                                 "message": message})
    return KfRecord(msgid, customer, items=(message,))


def message_of(msgid: str, customer: str, item: Mapping[str, Any]) -> InboundMessage:
    """The InboundMessage of a customer (or servicer) item of any msgtype."""
    msgtype = str(item.get("msgtype") or "")
    body = item.get(msgtype) if isinstance(item.get(msgtype), Mapping) else {}
    assert isinstance(body, Mapping)
    sent_at = _time(item.get("send_time"))
    payload: dict[str, Any] = {"msg_type": msgtype}
    base: dict[str, Any] = {"external_id": msgid, "sender_id": customer, "sent_at": sent_at}
    if msgtype == "text":
        content = _str(body.get("content"))
        menu_id = _str(body.get("menu_id"))
        if menu_id:  # a click on a msgmenu option we sent: the bot gets it as the chosen option
            payload.update(choice=menu_id, menu_id=menu_id)
            return InboundMessage(**base, text=content, content_type=ContentType.POSTBACK, payload=payload)
        return InboundMessage(**base, text=content, payload=payload)
    if msgtype in MEDIA_KINDS:
        kind, ctype, mime = MEDIA_KINDS[msgtype]
        att = Attachment(kind=kind, mime_type=mime, source={"media_id": _str(body.get("media_id"))})
        return InboundMessage(**base, content_type=ctype, attachments=(att,), payload=payload)
    if msgtype == "location":
        lat, lon = _float(body.get("latitude")), _float(body.get("longitude"))
        name, address = _str(body.get("name")), _str(body.get("address"))
        payload.update(latitude=lat, longitude=lon, label=name, address=address)
        text = "\n".join(p for p in (name, address) if p) or f"{lat},{lon}"
        return InboundMessage(**base, text=text, content_type=ContentType.LOCATION, payload=payload)
    if msgtype == "link":
        title, url = _str(body.get("title")), _str(body.get("url"))
        payload.update(title=title, description=_str(body.get("desc")), url=url, pic_url=_str(body.get("pic_url")))
        return InboundMessage(**base, text="\n".join(p for p in (title, url) if p), content_type=ContentType.LINK,
                              payload=payload)
    if msgtype == "business_card":
        userid = _str(body.get("userid"))
        payload["userid"] = userid
        return InboundMessage(**base, text=f"[名片 / contact card] {userid}", content_type=ContentType.CONTACT_CARD,
                              payload=payload)
    card = _card_text(msgtype, body)
    if card is not None:
        payload[msgtype] = dict(body)
        plain = msgtype in ("merged_msg", "msgmenu")
        return InboundMessage(**base, text=card, content_type=ContentType.TEXT if plain else ContentType.LINK,
                              payload=payload)
    # Unknown to this version: kept as a note for the agents, never answered by the bot.
    log.warning("wecom kf: unsupported message type %r (%s) stored as a note", msgtype, msgid)
    payload["unsupported"] = True
    return InboundMessage(**base, text=f"[不支持的消息类型 / unsupported message type: {msgtype or '?'}]",
                          content_type=ContentType.EVENT, payload=payload)


def _card_text(msgtype: str, body: Mapping[str, Any]) -> str | None:
    """Readable text for card-like types (mini program, 视频号, shop, merged chat records)."""
    if msgtype == "miniprogram":
        return f"[小程序 / mini program] {_str(body.get('title'))} ({_str(body.get('pagepath'))})"
    if msgtype == "msgmenu":
        options = [_str((o.get(o.get("type", "")) or {}).get("content")) for o in body.get("list") or []
                   if isinstance(o, Mapping)]
        return "\n".join(p for p in (_str(body.get("head_content")), *options, _str(body.get("tail_content"))) if p)
    if msgtype == "channels":
        return f"[视频号 / Channels] {_str(body.get('nickname'))}: {_str(body.get('title'))}"
    if msgtype == "channels_shop_product":
        price = body.get("sales_price")
        money = f" ¥{int(price) / 100:.2f}" if isinstance(price, int | float) else ""
        return f"[商品 / product] {_str(body.get('title'))}{money} · {_str(body.get('shop_nickname'))}"
    if msgtype == "channels_shop_order":
        return (f"[订单 / order] {_str(body.get('order_id'))} {_str(body.get('product_titles'))} "
                f"{_str(body.get('price_wording'))} {_str(body.get('state'))}").strip()
    if msgtype == "merged_msg":
        lines = [f"[聊天记录 / chat history] {_str(body.get('title'))}"]
        for entry in body.get("item") or []:
            if isinstance(entry, Mapping):
                lines.append(f"{_str(entry.get('sender_name'))}: {_merged_content(entry)}")
        return "\n".join(lines)
    return None


def _merged_content(entry: Mapping[str, Any]) -> str:
    try:
        inner = json.loads(_str(entry.get("msg_content")) or "{}")
    except ValueError:
        return "[?]"
    if not isinstance(inner, dict):
        return "[?]"
    kind = str(inner.get("msgtype") or entry.get("msgtype") or "")
    found = inner.get(kind)
    body = found if isinstance(found, dict) else {}
    return _str(body.get("content")) or f"[{kind}]"


def _event(msgid: str, item: Mapping[str, Any]) -> KfRecord:
    event = item.get("event") if isinstance(item.get("event"), Mapping) else {}
    assert isinstance(event, Mapping)
    kind = _str(event.get("event_type"))
    customer = _str(event.get("external_userid")) or None
    at = _time(item.get("send_time"))
    if kind == "enter_session":
        scene = _str(event.get("scene"))
        scene_param = unquote(_str(event.get("scene_param")))  # arrives URL-encoded
        attrs: dict[str, Any] = {}
        if scene:
            attrs["source"] = scene
            attrs["wecom_scene"] = scene
        if scene_param:
            attrs["wecom_scene_param"] = scene_param
        items: tuple[Inbound, ...] = ()
        if customer:
            items = (ChannelEvent(kind=ChannelEventKind.CONTACT_UPDATED, sender_id=customer, external_id=msgid,
                                  occurred_at=at, profile=ContactProfile(attributes=attrs),
                                  data={"event": kind, "scene": scene, "scene_param": scene_param}),)
        effect = {"kind": "enter_session", "scene": scene, "scene_param": scene_param,
                  "welcome_code": _str(event.get("welcome_code")) or None, "at": at.isoformat() if at else None}
        return KfRecord(msgid, customer, items=items, effect=effect)
    if kind == "msg_send_fail":
        fail_type = _int(event.get("fail_type"), 0)
        reason = FAIL_TYPES.get(fail_type, f"发送失败 / failed (fail_type {fail_type})")
        status = ChannelEvent(kind=ChannelEventKind.DELIVERY_STATUS, external_id=_str(event.get("fail_msgid")),
                              occurred_at=at, data={"status": "failed", "error": f"WeCom: {reason}",
                                                    "fail_type": fail_type})
        return KfRecord(msgid, customer, items=(status,))
    if kind in ("user_recall_msg", "servicer_recall_msg"):
        edited = ChannelEvent(kind=ChannelEventKind.MESSAGE_EDITED, sender_id=customer,
                              external_id=_str(event.get("recall_msgid")), occurred_at=at,
                              data={"text": RECALLED, "recalled": True, "by": kind.split("_")[0]})
        return KfRecord(msgid, customer, items=(edited,))
    if kind == "session_status_change":
        return KfRecord(msgid, customer, effect={
            "kind": "session_status", "change_type": _int(event.get("change_type"), 0),
            "old_servicer_userid": _str(event.get("old_servicer_userid")) or None,
            "new_servicer_userid": _str(event.get("new_servicer_userid")) or None,
            "msg_code": _str(event.get("msg_code")) or None, "at": at.isoformat() if at else None})
    if kind == "servicer_status_change":
        return KfRecord(msgid, None, effect={"kind": "servicer_status",
                                             "servicer_userid": _str(event.get("servicer_userid")),
                                             "status": _int(event.get("status"), 0)})
    log.info("wecom kf: ignoring event %r (%s): not used by this version", kind or "?", msgid)
    return KfRecord(msgid, customer, ignored=f"event {kind or '?'}")


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
