"""WeCom 微信客服 session states (service_state) as remembered on a customer's identity attributes.

In 人工 (3) WeCom refuses kf/send_msg (95018), but the move into 3 (service_state/trans, or the
session_status_change event when a servicer takes the customer from the pool) hands out a msg_code
that carries one text message through kf/send_msg_on_event within 48 h while the session stays in 3
(PROTOCOL.md §4). It is remembered here (`wecom_reply_code`) so an agent's first reply can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

SESSION_LIFETIME = timedelta(hours=48)
REPLY_CODE_LIFETIME = timedelta(hours=48)  # the "taken from the pool" code  # WeCom ends a session after 48 h: a remembered state expires with it
# The error code of a state change that was made while the message riding on its code could not be sent.
TEXT_UNSENT = "state_text_unsent"
STATE_NAMES = {0: "未处理", 1: "智能助手", 2: "待接入池", 3: "人工", 4: "已结束"}


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # SQLite hands back naive UTC


def current_state(attrs: Mapping[str, Any], now: datetime | None = None,
                  last_inbound_at: datetime | None = None) -> tuple[int, str | None]:
    """The remembered state of a customer's session and its servicer (0 when unknown or expired).

    `last_inbound_at`: the customer's last message; one after the session ended (4) started a new
    session, which WeCom puts in 0 (PROTOCOL.md §4: "4 → nothing, the customer's next message makes it 0")."""
    state = attrs.get("wecom_kf_state")
    at = attrs.get("wecom_kf_state_at")
    if not isinstance(state, int):
        return 0, None
    if isinstance(at, str):
        try:
            since = _aware(datetime.fromisoformat(at))
        except ValueError:
            return 0, None
        if since < (now or datetime.now(UTC)) - SESSION_LIFETIME:
            return 0, None
        if state == 4 and last_inbound_at is not None and _aware(last_inbound_at) > since:
            return 0, None
    servicer = attrs.get("wecom_servicer")
    return state, servicer if isinstance(servicer, str) else None


def remembered(attrs: Mapping[str, Any], state: int, servicer: str | None = None) -> dict[str, Any]:
    """Identity attributes with this session state (and servicer in state 3) written in."""
    out = dict(attrs)
    before = current_state(attrs)
    out["wecom_kf_state"] = state
    out["wecom_kf_state_at"] = datetime.now(UTC).isoformat()
    if state == 3 and servicer:
        out["wecom_servicer"] = servicer
    else:
        out.pop("wecom_servicer", None)
    if (state, servicer) != before:  # a code works only in the state (and with the servicer) that produced it
        out.pop("wecom_reply_code", None)
    return out


def with_reply_code(attrs: Mapping[str, Any], code: str, servicer: str | None) -> dict[str, Any]:
    """Identity attributes remembering the msg_code of a move into 人工 (3)."""
    return dict(attrs) | {"wecom_reply_code": {"code": code, "servicer": servicer,
                                               "at": datetime.now(UTC).isoformat()}}


def reply_code(attrs: Mapping[str, Any], now: datetime | None = None) -> str | None:
    """The unused msg_code that lets one reply reach a customer in 人工 (3), if any."""
    state, servicer = current_state(attrs, now)
    entry = attrs.get("wecom_reply_code")
    if state != 3 or not isinstance(entry, Mapping) or entry.get("used") or not entry.get("code"):
        return None
    if entry.get("servicer") and servicer and entry["servicer"] != servicer:
        return None
    try:
        if datetime.fromisoformat(str(entry.get("at"))) < (now or datetime.now(UTC)) - REPLY_CODE_LIFETIME:
            return None
    except ValueError:
        return None
    return str(entry["code"])


def code_used(attrs: Mapping[str, Any], message_id: int) -> dict[str, Any]:
    """Identity attributes with the reply code marked as taken by this message."""
    entry = dict(attrs.get("wecom_reply_code") or {})
    return dict(attrs) | {"wecom_reply_code": entry | {"used": message_id}}


def reply_code_key(external_userid: str) -> str:
    """The inbox state key under which the adapter hands a trans msg_code to the application."""
    return f"reply_code:{external_userid}"
