"""群发 (mass send), its preview, and subscription messages (订阅通知) of an Official Account.

The outbox row says which call it is in `metadata["wechat"]`:
- {"op": "mass", "target": "list" | "tag" | "all", "openids": [...], "tag_id": n, "clientmsgid": "..."}
- {"op": "preview"}: message/mass/preview to the row's recipient (a test follower)
- {"op": "subscribe", "template_id": "...", "data": {...}, "url": "..."}: message/subscribe/bizsend

`clientmsgid` makes a 群发 idempotent: WeChat refuses a second one with the same id for 24 hours
(45065) and names the msg_id it already accepted, which is the success we were waiting for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.wechat.api import WeChatClient
from channels.wechat.outbound import send_error
from channels.wechat.transport import WeChatAPIError, WeChatNetworkError
from scrm.domain import OutboundMessage, PermanentSendError, SendError, SendResult, TransientSendError

MAX_OPENIDS = 10_000  # message/mass/send takes 2-10,000 OpenIDs per call
DUPLICATE_CLIENTMSGID = 45065
RETRY_TOO_FAST = 45066  # the same clientmsgid again within a minute
NO_QUOTA = 45028
USER_REFUSED = 43101


def _text(message: OutboundMessage) -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": message.text or ""}}


def mass_payload(message: OutboundMessage, spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(API path name, body) of one 群发 call."""
    if not (message.text or "").strip():
        raise PermanentSendError("nothing to send: the 群发 text is empty", code="empty_message")
    body: dict[str, Any] = {**_text(message), "clientmsgid": str(spec["clientmsgid"]), "send_ignore_reprint": 0}
    target = spec.get("target")
    if target == "list":
        openids = [str(o) for o in spec.get("openids") or []]
        if not 2 <= len(openids) <= MAX_OPENIDS:
            raise PermanentSendError(f"a 群发 by OpenID list needs 2 to {MAX_OPENIDS} followers, not {len(openids)}",
                                     code="bad_openid_list")
        return "send", {**body, "touser": openids}
    if target == "all":
        return "sendall", {**body, "filter": {"is_to_all": True}}
    if target == "tag":
        return "sendall", {**body, "filter": {"is_to_all": False, "tag_id": int(spec["tag_id"])}}
    raise PermanentSendError(f"unknown 群发 target {target!r}", code="bad_message")


def subscribe_payload(message: OutboundMessage, spec: Mapping[str, Any]) -> dict[str, Any]:
    """message/subscribe/bizsend: template data values are {"value": "..."} objects."""
    data = {str(k): {"value": str(v)} for k, v in (spec.get("data") or {}).items()}
    body: dict[str, Any] = {"touser": message.recipient_id, "template_id": str(spec["template_id"]), "data": data}
    if spec.get("url"):
        body["page"] = str(spec["url"])
    return body


def mass_error(exc: WeChatAPIError | WeChatNetworkError) -> SendError:
    """群发 and subscription-message errors the customer-service mapping does not know."""
    if isinstance(exc, WeChatAPIError):
        if exc.errcode == NO_QUOTA:
            return PermanentSendError("the account's 群发 quota is used up (45028: has no masssend quota)",
                                      code="45028")
        if exc.errcode == RETRY_TOO_FAST:
            return TransientSendError("the same 群发 was retried too fast (45066)", code="45066", retry_after=60.0)
        if exc.errcode == USER_REFUSED:
            return PermanentSendError("the follower refused this subscription message (43101)", code="43101")
    return send_error(exc)


async def send_wechat_op(client: WeChatClient, message: OutboundMessage, spec: Mapping[str, Any]) -> SendResult:
    """Perform the call `spec` describes; the msg_id becomes the delivery's external id."""
    op = spec.get("op")
    try:
        if op == "mass":
            kind, body = mass_payload(message, spec)
            try:
                result = await (client.mass_send(body) if kind == "send" else client.mass_sendall(body))
            except WeChatAPIError as exc:
                if exc.errcode != DUPLICATE_CLIENTMSGID or exc.data.get("msg_id") is None:
                    raise
                # Sent before (a worker died before recording it): the earlier 群发 is this one.
                return SendResult(external_id=str(exc.data["msg_id"]), data={"duplicate": True})
            return SendResult(external_id=_str(result.get("msg_id")),
                              data={"msg_data_id": _str(result.get("msg_data_id"))})
        if op == "preview":
            result = await client.mass_preview({"touser": message.recipient_id, **_text(message)})
            return SendResult(external_id=None, data={"preview_msg_id": _str(result.get("msg_id"))})
        if op == "subscribe":
            result = await client.subscribe_send(subscribe_payload(message, spec))
            return SendResult(external_id=_str(result.get("msgid")))
    except (WeChatAPIError, WeChatNetworkError) as exc:
        raise mass_error(exc) from None
    raise PermanentSendError(f"unknown WeChat operation {op!r}", code="bad_message")


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
