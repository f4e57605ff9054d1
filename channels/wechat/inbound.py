"""WeChat callback message (parsed by wechatpy) -> InboundMessage / ChannelEvent.

Messages are deduplicated by MsgId; events have none, so their id is sender + CreateTime + Event,
which is what WeChat repeats when it retries a callback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from wechatpy import parse_message

from scrm.domain import (
    Attachment,
    ChannelEvent,
    ChannelEventKind,
    ContentType,
    Inbound,
    InboundMessage,
)

log = logging.getLogger(__name__)

SCENE_PREFIX = "qrscene_"
# Account-level notices and features this product does not use: acknowledged, logged, not stored.
IGNORED_EVENTS = {
    "kf_create_session": "WeChat's own customer-service session",
    "kf_close_session": "WeChat's own customer-service session",
    "kf_switch_session": "WeChat's own customer-service session",
    "annual_renew": "account verification notice",
    "naming_verify_success": "account verification notice",
    "naming_verify_fail": "account verification notice",
    "qualification_verify_success": "account verification notice",
    "qualification_verify_fail": "account verification notice",
    "verify_expired": "account verification notice",
    "merchant_order": "WeChat store (unsupported)",
    "submit_invoice_title": "invoices (unsupported)",
    "user_authorize_invoice": "invoices (unsupported)",
    "update_invoice_status": "invoices (unsupported)",
    "shakearoundusershake": "shake-around beacons (unsupported)",
    "wificonnected": "WeChat Wi-Fi (unsupported)",
}
# Menu buttons that open the camera / scanner / location picker: the user interacted with us.
MENU_INTERACTIONS = {
    "scancode_push",
    "scancode_waitmsg",
    "pic_sysphoto",
    "pic_photo_or_album",
    "pic_weixin",
    "location_select",
}
VOICE_MIME = {"amr": "audio/amr", "speex": "audio/speex", "mp3": "audio/mpeg"}


def to_items(xml: str, fields: Mapping[str, Any]) -> list[Inbound]:
    """Translate one authenticated callback; [] (with a log line) for what we deliberately ignore."""
    msg_type = str(fields["MsgType"]).lower()
    sender = str(fields["FromUserName"])
    sent_at = datetime.fromtimestamp(int(fields["CreateTime"]), tz=UTC)
    if msg_type.startswith("device_"):
        log.info("wechat: ignoring %s from %s: IoT devices are not supported", msg_type, sender)
        return []
    if msg_type == "event":
        return _event(fields, sender, sent_at)
    msg = parse_message(xml)
    msg_id = fields.get("MsgId") or fields.get("MsgID")
    if not msg_id:
        log.warning("wechat: ignoring %s message from %s without MsgId", msg_type, sender)
        return []
    base: dict[str, Any] = {
        "external_id": str(msg_id),
        "sender_id": sender,
        "sent_at": sent_at,
    }
    payload: dict[str, Any] = {"msg_type": msg_type}
    if fields.get("bizmsgmenuid"):  # the user tapped an option of a msgmenu message
        payload["menu_choice_id"] = fields["bizmsgmenuid"]
    if msg_type == "text":
        content = fields.get("Content")
        return [InboundMessage(**base, text=content if isinstance(content, str) else "", payload=payload)]
    if msg_type == "image":
        att = Attachment(
            kind="image", mime_type="image/jpeg", source={"media_id": msg.media_id, "pic_url": msg.image}
        )
        return [InboundMessage(**base, content_type=ContentType.IMAGE, attachments=(att,), payload=payload)]
    if msg_type == "voice":
        fmt = (msg.format or "").lower()
        att = Attachment(
            kind="voice", mime_type=VOICE_MIME.get(fmt), source={"media_id": msg.media_id, "format": msg.format}
        )
        text = msg.recognition or None  # WeChat's speech recognition, when enabled for the account
        if text:
            payload["recognition"] = text
        return [
            InboundMessage(
                **base, text=text, content_type=ContentType.VOICE, attachments=(att,), payload=payload
            )
        ]
    if msg_type in ("video", "shortvideo"):
        att = Attachment(
            kind="video",
            mime_type="video/mp4",
            source={"media_id": msg.media_id, "thumb_media_id": msg.thumb_media_id},
        )
        return [InboundMessage(**base, content_type=ContentType.VIDEO, attachments=(att,), payload=payload)]
    if msg_type == "location":
        lat, lon = _float(msg.location_x), _float(msg.location_y)
        label = msg.label or ""
        payload.update(latitude=lat, longitude=lon, label=label, scale=_float(msg.scale))
        text = label or f"{lat},{lon}"
        return [InboundMessage(**base, text=text, content_type=ContentType.LOCATION, payload=payload)]
    if msg_type == "link":
        payload.update(title=msg.title, description=msg.description, url=msg.url)
        text = "\n".join(p for p in (msg.title, msg.url) if p)
        return [InboundMessage(**base, text=text, content_type=ContentType.LINK, payload=payload)]
    log.warning("wechat: ignoring unsupported message type %r from %s", msg_type, sender)
    return []


def _event(fields: Mapping[str, Any], sender: str, at: datetime) -> list[Inbound]:
    raw_event = str(fields.get("Event") or "")
    event = raw_event.lower()
    key = _text(fields.get("EventKey"))
    event_id = f"{sender}:{fields['CreateTime']}:{raw_event}"

    def interaction(**data: Any) -> list[Inbound]:
        data = {"event": raw_event, **data}
        return [
            ChannelEvent(
                kind=ChannelEventKind.INTERACTION,
                sender_id=sender,
                external_id=event_id,
                occurred_at=at,
                data=data,
            )
        ]

    if event == "subscribe":
        data: dict[str, Any] = {}
        if key:
            data["source"] = key[len(SCENE_PREFIX):] if key.startswith(SCENE_PREFIX) else key
        if fields.get("Ticket"):
            data["ticket"] = fields["Ticket"]
        kind = ChannelEventKind.CONTACT_SUBSCRIBED
        return [ChannelEvent(kind=kind, sender_id=sender, external_id=event_id, occurred_at=at, data=data)]
    if event == "unsubscribe":
        kind = ChannelEventKind.CONTACT_UNSUBSCRIBED
        return [ChannelEvent(kind=kind, sender_id=sender, external_id=event_id, occurred_at=at)]
    if event == "scan":  # an existing follower scanned a parametric QR code
        return interaction(scene=key, ticket=fields.get("Ticket"))
    if event == "click":
        payload = {"choice": key, "menu": True}
        return [
            InboundMessage(
                external_id=event_id,
                sender_id=sender,
                text=key,
                content_type=ContentType.POSTBACK,
                sent_at=at,
                payload=payload,
            )
        ]
    if event == "view":
        return interaction(url=key, menu_id=fields.get("MenuId"))
    if event == "view_miniprogram":  # a menu button that opens a Mini Program page
        return interaction(pagepath=key, menu_id=fields.get("MenuId"), miniprogram=True)
    if event == "location":
        return interaction(
            latitude=_float(fields.get("Latitude")),
            longitude=_float(fields.get("Longitude")),
            precision=_float(fields.get("Precision")),
        )
    if event in SUBSCRIBE_MSG_EVENTS:
        return [_subscribe_msg(fields, sender, at, event, event_id)]
    if event in ("templatesendjobfinish", "masssendjobfinish"):
        return [_delivery_status(fields, sender, at, event)]
    if event == "publishjobfinish":
        return [_publish_result(fields, at)]
    if event in MENU_INTERACTIONS:
        return interaction(key=key, **_menu_details(fields))
    reason = IGNORED_EVENTS.get(event, "unknown event type")
    log.info("wechat: ignoring event %r from %s: %s", raw_event, sender, reason)
    return []


def _delivery_status(fields: Mapping[str, Any], sender: str, at: datetime, event: str) -> ChannelEvent:
    status = _text(fields.get("Status"))
    ok = status.lower() in ("success", "send success")
    data: dict[str, Any] = {"status": "delivered" if ok else "failed", "error": None if ok else status}
    if event == "masssendjobfinish":
        data["job_status"] = status
        for name in ("TotalCount", "FilterCount", "SentCount", "ErrorCount"):
            data[name.removesuffix("Count").lower() + "_count"] = _int(fields.get(name))
    return ChannelEvent(
        kind=ChannelEventKind.DELIVERY_STATUS,
        # Mass-send reports come from WeChat's broadcast assistant, not from a contact.
        sender_id=sender if event == "templatesendjobfinish" else None,
        external_id=str(fields.get("MsgID") or fields.get("MsgId") or ""),
        occurred_at=at,
        data=data,
    )


# Subscription messages (订阅通知): the follower's consent per template, and the result of a send.
SUBSCRIBE_MSG_EVENTS = {
    "subscribe_msg_popup_event": ("popup", "SubscribeMsgPopupEvent"),
    "subscribe_msg_change_event": ("change", "SubscribeMsgChangeEvent"),
    "subscribe_msg_sent_event": ("sent", "SubscribeMsgSentEvent"),
}


def _subscribe_msg(fields: Mapping[str, Any], sender: str, at: datetime, event: str, event_id: str) -> ChannelEvent:
    """Consent given or withdrawn (popup / settings) or a send's result: a profile change of the follower."""
    what, element = SUBSCRIBE_MSG_EVENTS[event]
    body = fields.get(element)
    entries = body.get("List") if isinstance(body, Mapping) else None
    entries = [entries] if isinstance(entries, Mapping) else list(entries or [])
    items = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not _text(entry.get("TemplateId")):
            continue
        item: dict[str, Any] = {"template_id": _text(entry.get("TemplateId"))}
        if what == "sent":
            item.update(msg_id=_text(entry.get("MsgID")) or None, error_code=_int(entry.get("ErrorCode")),
                        error_status=_text(entry.get("ErrorStatus")) or None)
        else:
            item.update(status=_text(entry.get("SubscribeStatusString")).lower() or None,
                        popup_scene=_text(entry.get("PopupScene")) or None)
        items.append(item)
    return ChannelEvent(kind=ChannelEventKind.CONTACT_UPDATED, sender_id=sender, external_id=event_id,
                        occurred_at=at, data={"subscribe_msg": {"event": what, "items": items}})


# freepublish results (publish_status): 0 published, 1 still publishing, the rest failed or withdrawn.
PUBLISH_STATUS = {
    0: "published",
    1: "publishing",
    2: "original-content check failed",
    3: "publishing failed",
    4: "rejected by the platform's review",
    5: "deleted after publishing",
    6: "banned after publishing",
}


def _publish_result(fields: Mapping[str, Any], at: datetime) -> ChannelEvent:
    """An article publish job finished (PUBLISHJOBFINISH): recorded like a broadcast result, by publish_id."""
    info = fields.get("PublishEventInfo")
    info = info if isinstance(info, Mapping) else {}
    code = _int(info.get("publish_status"))
    detail = info.get("article_detail")
    items = detail.get("item") if isinstance(detail, Mapping) else None
    items = [items] if isinstance(items, Mapping) else list(items or [])
    urls = [str(i.get("article_url")) for i in items if isinstance(i, Mapping) and i.get("article_url")]
    reason = PUBLISH_STATUS.get(code, f"publish_status {code}") if code is not None else "no publish_status"
    status = "delivered" if code == 0 else "publishing" if code == 1 else "failed"
    data: dict[str, Any] = {"status": status, "error": None if status != "failed" else reason,
                            "publish_status": code, "article_id": _text(info.get("article_id")) or None,
                            "article_urls": urls, "event": str(fields.get("Event") or "")}
    if info.get("fail_idx") is not None:
        data["fail_idx"] = info.get("fail_idx")
    return ChannelEvent(
        kind=ChannelEventKind.DELIVERY_STATUS,
        sender_id=None,  # the account's publishing assistant, not a contact
        external_id=str(info.get("publish_id") or ""),
        occurred_at=at,
        data=data,
    )


def _menu_details(fields: Mapping[str, Any]) -> dict[str, Any]:
    scan = fields.get("ScanCodeInfo")
    if isinstance(scan, Mapping):
        return {"scan_type": scan.get("ScanType"), "scan_result": scan.get("ScanResult")}
    loc = fields.get("SendLocationInfo")
    if isinstance(loc, Mapping):
        return {
            "latitude": _float(loc.get("Location_X")),
            "longitude": _float(loc.get("Location_Y")),
            "label": loc.get("Label"),
        }
    pics = fields.get("SendPicsInfo")
    if isinstance(pics, Mapping):
        return {"picture_count": _int(pics.get("Count"))}
    return {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
