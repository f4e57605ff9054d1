"""Per-recipient broadcast rules: personalization templates and which channel may carry the message.

Channel rules come from each adapter's capabilities and the identity's state, never from the marketer:
- any channel: inbox active, contact not opted out of broadcasts there, identity reachable and subscribed;
- a channel with a reply window (WeChat: 48 h): a normal message only inside the window, otherwise a
  subscription message (订阅通知) when the follower consented to the broadcast's template, otherwise
  skipped "outside_window" -- never a template message: WeChat allows those for service notices only;
- WeChat OA in 群发 mode (mass): every follower, window or not, within the monthly per-follower quota of
  service accounts; in 订阅通知 mode (subscribe): only followers with a consent to the template;
- WeCom 微信客服: inside the window, and only while the session lets the API send (not in 待接入池, 人工
  or 已结束: skipped "session_state"), and only while the customer's allowance of 5 messages since their
  last message is not used up (skipped "reply_limit": WeCom would refuse it with 95001); the broadcast
  then counts as one of the 5;
- Telegram: only users who started the bot (they wrote to it) and did not block it;
- email: only with consent (contact attributes consent.email = true), with an unsubscribe link;
- WeCom 客户联系: only customers a staff member follows, at most one 群发 per customer per day; the
  message waits for that staff member to confirm it in the WeCom client (status "waiting").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from channels.base import Capabilities
    from scrm.context import ChannelRules

SHANGHAI = ZoneInfo("Asia/Shanghai")  # WeCom's daily 群发 cap counts calendar days in China

VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:\|\s*(.*?)\s*)?\}\}")
PROFILE_VARS = ("name", "email", "phone", "language")
EXTRA_VARS = ("unsubscribe_url",)


class TemplateError(ValueError):
    """A template uses an unknown variable or is malformed."""


def template_variables(template: str, attribute_keys: Sequence[str]) -> list[str]:
    """Check every {{variable | fallback}} of the template; returns the variable names."""
    names = []
    for m in VAR_RE.finditer(template):
        name = m.group(1)
        if name.startswith("attributes."):
            if name[len("attributes."):] not in attribute_keys:
                raise TemplateError(f"unknown variable {{{{{name}}}}}: no attribute {name[11:]!r} is defined")
        elif name not in PROFILE_VARS and name not in EXTRA_VARS:
            known = ", ".join([*PROFILE_VARS, "attributes.<key>"])
            raise TemplateError(f"unknown variable {{{{{name}}}}} (use {known})")
        names.append(name)
    leftover = VAR_RE.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        raise TemplateError("malformed variable: every {{ needs a matching }} around one variable name")
    return names


def _unquote(fallback: str | None) -> str:
    if not fallback:
        return ""
    if len(fallback) >= 2 and fallback[0] == fallback[-1] and fallback[0] in "\"'":
        return fallback[1:-1]
    return fallback


def render(template: str, contact: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> str:
    """Fill the template for one contact; a missing value takes its fallback (or nothing)."""
    return compile_template(template)(contact, extra)


def _text(v: Any, fallback: str) -> str:
    if v is None or v == "":
        return fallback
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


@lru_cache(maxsize=64)
def compile_template(template: str) -> Callable[[Mapping[str, Any], Mapping[str, str] | None], str]:
    """The template parsed once (a broadcast renders it for every recipient)."""
    parts: list[str | tuple[str, str]] = []  # literal text, or (variable, fallback)
    pos = 0
    for m in VAR_RE.finditer(template):
        parts.append(template[pos:m.start()])
        parts.append((m.group(1), _unquote(m.group(2))))
        pos = m.end()
    parts.append(template[pos:])

    def fill(contact: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> str:
        attrs = contact.get("attributes") or {}
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, fallback = part
            if name.startswith("attributes."):
                v = attrs.get(name[11:])
            elif extra and name in extra:
                v = extra[name]
            else:
                v = contact.get(name)
            out.append(_text(v, fallback))
        return "".join(out)

    return fill


@dataclass(frozen=True)
class InboxInfo:
    id: int
    channel_type: str
    active: bool
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class IdentityInfo:
    id: int
    inbox_id: int
    external_id: str
    reachable: bool
    subscribed: bool
    last_inbound_at: datetime | None
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class Decision:
    """Where a recipient's message goes (mode "message" or "template"), or why it is skipped."""

    identity: IdentityInfo | None
    inbox: InboxInfo | None
    mode: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class WeChatRules:
    """A broadcast's WeChat OA delivery mode and what it needs, looked up once per broadcast."""

    mode: str = "standard"  # standard | mass | subscribe
    consented: frozenset[int] = frozenset()  # identities with a usable consent to the subscription template
    capped: frozenset[int] = frozenset()  # followers who reached their monthly 群发 quota (service accounts)


def has_template(inbox: InboxInfo) -> bool:
    tpl = inbox.settings.get("template") if inbox.settings else None
    return isinstance(tpl, Mapping) and bool(tpl.get("template_id"))


def check_identity(contact: Mapping[str, Any], ident: IdentityInfo, inbox: InboxInfo, now: datetime,
                   caps: Capabilities | None, wechat: WeChatRules | None = None, blocked: str | None = None,
                   allowance_used: bool = False) -> Decision:
    """Apply the channel's rules to one identity of the contact (`caps`: what the inbox's channel can do;
    `blocked`: why the channel's session rules refuse messages to the identity now, ChannelRules.reply_blocked;
    `allowance_used`: the channel's message count since the identity's last message is used up,
    reply_limits.identities_at_limit)."""
    channel = inbox.channel_type
    skip = lambda reason: Decision(ident, inbox, None, reason)  # noqa: E731
    if not inbox.active:
        return skip("inbox_disabled")
    opt_outs = contact.get("opt_outs") or {}
    if opt_outs.get(f"broadcast:{channel}") is True or opt_outs.get("broadcast:all") is True:
        return skip("opted_out")
    if not ident.reachable:
        return skip("unreachable")
    if not ident.subscribed:
        return skip("unsubscribed")
    if caps is None:
        return skip("channel_unavailable")
    if channel == "web":
        return skip("web_chat")  # a visitor may never come back: web chat contacts get broadcasts by email
    if channel == "telegram" and ident.last_inbound_at is None:
        return skip("not_started")  # a bot may not write first
    if channel == "email":
        consent = (contact.get("attributes") or {}).get("consent") or {}
        if not (isinstance(consent, Mapping) and consent.get("email") is True):
            return skip("no_consent")
    if caps.staff_confirmed_broadcast:  # WeCom 群发: a staff member who follows the customer sends it
        if not ident.attributes.get("follow_users"):
            return skip("no_staff")
        if ident.attributes.get("wecom_mass_day") == now.astimezone(SHANGHAI).date().isoformat():
            return skip("daily_cap")  # one 群发 per customer per day, across the corp
        return Decision(ident, inbox, "staff_confirmed")
    if channel == "wechat_oa" and wechat is not None and wechat.mode != "standard":
        if wechat.mode == "mass":
            return skip("mass_quota") if ident.id in wechat.capped else Decision(ident, inbox, "mass")
        return Decision(ident, inbox, "subscribe") if ident.id in wechat.consented else skip("no_subscribe_consent")
    if caps.reply_window is not None:
        inside = ident.last_inbound_at is not None and now - ident.last_inbound_at < caps.reply_window
        if not inside:
            if channel == "wechat_oa" and wechat is not None and ident.id in wechat.consented:
                return Decision(ident, inbox, "subscribe")
            return skip("outside_window")
        if blocked:  # WeCom 微信客服 in 待接入池 / 人工 / 已结束: kf/send_msg would answer 95018
            return skip("session_state")
        if allowance_used:  # WeCom 微信客服: 5 messages since the customer's last (95001 beyond)
            return skip("reply_limit")
    return Decision(ident, inbox, "message")


class Chooser:
    """`choose` for many contacts of one broadcast: the inbox lookups are built once."""

    def __init__(self, inboxes: Sequence[InboxInfo], now: datetime, channels: ChannelRules,
                 wechat: WeChatRules | None = None, allowance_used: frozenset[int] = frozenset()) -> None:
        self.now = now
        self.wechat = wechat
        self.allowance_used = allowance_used  # identity ids (reply_limits.identities_at_limit)
        self.channels = channels
        self.by_inbox = {i.id: i for i in inboxes}
        self.order = {i.id: n for n, i in enumerate(inboxes)}
        self.capabilities = {i.channel_type: channels.capabilities(i.channel_type) for i in inboxes}

    def __call__(self, contact: Mapping[str, Any], identities: Sequence[IdentityInfo]) -> Decision:
        by_inbox = self.by_inbox
        candidates = [i for i in identities if i.inbox_id in by_inbox]
        if len(candidates) > 1:
            preferred = (contact.get("attributes") or {}).get("preferred_channel")
            candidates.sort(key=lambda i: (by_inbox[i.inbox_id].channel_type != preferred, self.order[i.inbox_id], i.id))
        first_refusal: Decision | None = None
        for ident in candidates:
            inbox = by_inbox[ident.inbox_id]
            decision = check_identity(contact, ident, inbox, self.now, self.capabilities[inbox.channel_type],
                                      self.wechat, self.channels.reply_blocked(inbox.channel_type, ident.attributes,
                                                                               ident.last_inbound_at),
                                      ident.id in self.allowance_used)
            if decision.reason is None:
                return decision
            first_refusal = first_refusal or decision
        return first_refusal or Decision(None, None, None, "no_channel")


def choose(
    contact: Mapping[str, Any], identities: Sequence[IdentityInfo], inboxes: Sequence[InboxInfo], now: datetime,
    channels: ChannelRules,
) -> Decision:
    """Pick the contact's channel: their preferred channel first, then the broadcast's inbox order."""
    return Chooser(inboxes, now, channels)(contact, identities)
