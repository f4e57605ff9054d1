"""WeCom 微信客服 session states (service_state) as remembered on a customer's identity attributes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

SESSION_LIFETIME = timedelta(hours=48)  # WeCom ends a session after 48 h: a remembered state expires with it
STATE_NAMES = {0: "未处理", 1: "智能助手", 2: "待接入池", 3: "人工", 4: "已结束"}


def current_state(attrs: Mapping[str, Any], now: datetime | None = None) -> tuple[int, str | None]:
    """The remembered state of a customer's session and its servicer (0 when unknown or expired)."""
    state = attrs.get("wecom_kf_state")
    at = attrs.get("wecom_kf_state_at")
    if not isinstance(state, int):
        return 0, None
    if isinstance(at, str):
        try:
            if datetime.fromisoformat(at) < (now or datetime.now(UTC)) - SESSION_LIFETIME:
                return 0, None
        except ValueError:
            return 0, None
    servicer = attrs.get("wecom_servicer")
    return state, servicer if isinstance(servicer, str) else None


def remembered(attrs: Mapping[str, Any], state: int, servicer: str | None = None) -> dict[str, Any]:
    """Identity attributes with this session state (and servicer in state 3) written in."""
    out = dict(attrs)
    out["wecom_kf_state"] = state
    out["wecom_kf_state_at"] = datetime.now(UTC).isoformat()
    if state == 3 and servicer:
        out["wecom_servicer"] = servicer
    else:
        out.pop("wecom_servicer", None)
    return out
