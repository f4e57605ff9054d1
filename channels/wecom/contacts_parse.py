"""客户联系 payloads -> what scrm keeps: callbacks to changes, external contacts to profiles and follow-ups."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from channels.wecom.callback import event_name, text
from scrm.domain import ChannelEvent, ChannelEventKind, ContactProfile

log = logging.getLogger(__name__)

CHANGES = {"add_external_contact", "add_half_external_contact", "edit_external_contact", "del_external_contact",
           "del_follow_user", "transfer_fail"}
TRANSFER_FAIL = {"customer_refused": "客户拒绝 / the customer refused",
                 "customer_limit_exceed": "接替成员的客户数已达上限 / the taking member's customer limit is reached"}
ADD_WAYS = {0: "unknown", 1: "qr_code", 2: "phone_search", 3: "card_share", 4: "group_chat", 5: "phone_contacts",
            6: "wechat_contact", 8: "third_party", 9: "email_search", 10: "channels_homepage", 201: "internal_share",
            202: "admin_assign"}


@dataclass(frozen=True)
class ContactChange:
    """One authenticated 客户联系 callback: what changed, for whom, and what to do now."""

    event: str  # change_external_contact | change_external_tag
    change: str
    userid: str = ""
    external_userid: str = ""
    state: str = ""
    welcome_code: str = ""
    fail_reason: str = ""
    at: datetime | None = None

    def items(self) -> list[ChannelEvent]:
        """Items for the ingest sink: a new follow creates the identity with its 渠道活码 source."""
        if self.event != "change_external_contact" or self.change not in ("add_external_contact",
                                                                           "add_half_external_contact"):
            return []
        attrs: dict[str, Any] = {"source": self.state, "wecom_state": self.state} if self.state else {}
        return [ChannelEvent(kind=ChannelEventKind.CONTACT_SUBSCRIBED, sender_id=self.external_userid,
                             external_id=f"{self.external_userid}:{self.userid}:{self.change}:{self.at}",
                             occurred_at=self.at, profile=ContactProfile(attributes=attrs),
                             data={"source": self.state} if self.state else {})]


def _when(raw: str) -> datetime | None:
    """A callback's Unix time, or None when it is not one: "²" passes isdigit() but not int(), and a year
    past 9999 overflows (both were a 500 for a correctly signed callback)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 11:
        return None
    try:
        return datetime.fromtimestamp(int(raw), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_change(fields: Mapping[str, Any]) -> ContactChange | None:
    """The change a callback announces, or None (with a log line) for what this version ignores."""
    event = event_name(fields)
    at = _when(text(fields, "CreateTime") or text(fields, "TimeStamp"))
    change = text(fields, "ChangeType")
    if event == "change_external_tag":
        return ContactChange(event=event, change=change, at=at)
    if event != "change_external_contact":
        log.info("wecom contacts: ignoring callback %r: not a 客户联系 event", event or "?")
        return None
    if change not in CHANGES:
        log.info("wecom contacts: ignoring change_external_contact %r (not used by this version)", change or "?")
        return None
    if not text(fields, "ExternalUserID"):
        log.warning("wecom contacts: ignoring %s without ExternalUserID", change)
        return None
    return ContactChange(event=event, change=change, userid=text(fields, "UserID"),
                         external_userid=text(fields, "ExternalUserID"), state=text(fields, "State"),
                         welcome_code=text(fields, "WelcomeCode"), fail_reason=text(fields, "FailReason"), at=at)


def follow_record(follow: Mapping[str, Any]) -> dict[str, Any]:
    """A follow-up (staff member ↔ customer) as kept on the identity: remark, add_way, state, corp tag ids."""
    tags = follow.get("tags")
    if isinstance(tags, list):
        tag_ids = [str(t["tag_id"]) for t in tags if isinstance(t, Mapping) and t.get("tag_id") and t.get("type", 1) == 1]
    else:
        tag_ids = [str(t) for t in follow.get("tag_id") or []]
    add_way = follow.get("add_way")
    return {"userid": str(follow.get("userid") or ""), "remark": follow.get("remark") or "",
            "description": follow.get("description") or "", "createtime": follow.get("createtime"),
            "add_way": add_way, "add_way_name": ADD_WAYS.get(add_way, "other") if isinstance(add_way, int) else None,
            "state": follow.get("state") or "", "tag_ids": tag_ids,
            "remark_corp_name": follow.get("remark_corp_name") or follow.get("remark_company") or "",
            "remark_mobiles": [str(m) for m in follow.get("remark_mobiles") or []]}


def profile_of(contact: Mapping[str, Any]) -> ContactProfile:
    """A contact profile from external_contact: name, avatar, gender, company (WeCom users), UnionID."""
    attrs: dict[str, Any] = {}
    gender = {1: "male", 2: "female"}.get(contact.get("gender") or 0)
    if gender:
        attrs["gender"] = gender
    if contact.get("unionid"):
        attrs["wechat_unionid"] = str(contact["unionid"])
    for key in ("corp_name", "position"):
        if contact.get(key):
            attrs[f"wecom_{key}"] = str(contact[key])
    return ContactProfile(name=contact.get("name") or None, avatar_url=contact.get("avatar") or None, attributes=attrs)


def merge_follows(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """batch/get_by_user rows -> {external_userid: {"external_contact", "follow_user": [...]}}."""
    people: dict[str, dict[str, Any]] = {}
    for row in rows:
        contact = row.get("external_contact")
        follow = row.get("follow_info")
        if not isinstance(contact, Mapping) or not contact.get("external_userid"):
            continue
        person = people.setdefault(str(contact["external_userid"]), {"external_contact": dict(contact),
                                                                     "follow_user": []})
        if isinstance(follow, Mapping):
            person["follow_user"].append(dict(follow))
    return people
