"""The 客户联系 connection (`wecom_contacts`): external contacts followed by staff, corp tags, welcome
messages and staff-confirmed 群发 (add_msg_template).

Callbacks (change_external_contact, change_external_tag) are answered at once: a new follow is stored
through the sink, then the application re-reads the contact (`get`) and sends the welcome. Broadcasts
are not sent per recipient: the application groups them per staff member into add_msg_template tasks
(capabilities.staff_confirmed_broadcast) and `send` submits one task; the staff member confirms it in
the WeCom client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from wechatpy.enterprise.crypto import WeChatCrypto

from channels.base import Capabilities, ChannelAdapter, ChannelRuntime, InboxConfig, IngestSink, RateLimit
from channels.registry import register
from channels.replay import ReplayGuard
from channels.wecom.api import WeComAPIError, WeComClient, WeComNetworkError
from channels.wecom.callback import open_callback, verify_url
from channels.wecom.contacts_parse import parse_change
from channels.wecom.kf_outbound import send_error
from channels.wecom.settings import WeComContactsSecrets, WeComContactsSettings
from channels.wecom.token import WeComTokenProvider
from scrm.domain import (
    OutboundMessage,
    PermanentSendError,
    SendResult,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
)

log = logging.getLogger(__name__)

OK = WebhookResponse(status=200, body=b"", content_type="text/plain")
MAX_FOLLOW_PAGES = 100  # `get` pages its follow_user list at 500 a page


@register
class WeComContactsAdapter(ChannelAdapter):
    """客户联系: staff members' external contacts (外部联系人) as scrm contacts."""

    channel_type = "wecom_contacts"
    display_name = "WeCom 客户联系"
    capabilities = Capabilities(buttons=False, attachments=False, staff_confirmed_broadcast=True)
    settings_model = WeComContactsSettings
    secrets_model = WeComContactsSecrets

    def __init__(self, inbox: InboxConfig, runtime: ChannelRuntime) -> None:
        super().__init__(inbox, runtime)
        self.config = cast(WeComContactsSettings, self.settings)
        keys = cast(WeComContactsSecrets, self.secrets)
        self.corp_id = self.config.corp_id
        self.crypto = WeChatCrypto(keys.token.get_secret_value(), keys.encoding_aes_key.get_secret_value(),
                                   self.corp_id)
        # The 客户联系 secret has its own token, cached apart from the 微信客服 app's.
        self.tokens = WeComTokenProvider(corp_id=self.corp_id, secret=keys.secret.get_secret_value(),
                                         cache=runtime.cache, http=lambda: self.runtime.http,
                                         base_url=self.config.api_base_url)
        self.client = WeComClient(http=lambda: self.runtime.http, base_url=self.config.api_base_url,
                                  tokens=self.tokens)
        self.clock = time.time

    async def handle_webhook(self, request: WebhookRequest, sink: IngestSink) -> WebhookResponse:
        """GET: the decrypted echostr. POST: store a new follow, note the change, answer 200."""
        window = self.config.timestamp_window_seconds
        if request.method.upper() == "GET":
            plain = verify_url(self.crypto, request.query, window=window, now=self.clock())
            return WebhookResponse(status=200, body=plain.encode("utf-8"), content_type="text/plain")
        if request.method.upper() != "POST":
            raise WebhookError(405, "only GET and POST are supported", code="method_not_allowed")
        callback = open_callback(self.crypto, request.query, request.body, window=window, now=self.clock())
        # The same replay cache as WeChat's: a (timestamp, nonce) pair is good for one body only.
        await ReplayGuard(self.runtime.cache, scope=f"wecom_contacts:{self.inbox.id}", window=window).check(
            request.query.get("timestamp", ""), request.query.get("nonce", ""), request.body)
        change = parse_change(callback.fields)
        if change is None:
            return OK
        items = change.items()
        if items:
            await sink(items)
        await self.runtime.request_pull({"kind": "external_contact", "event": change.event, "change": change.change,
                                         "userid": change.userid, "external_userid": change.external_userid,
                                         "state": change.state, "welcome_code": change.welcome_code,
                                         "fail_reason": change.fail_reason,
                                         "at": change.at.isoformat() if change.at else None})
        return OK

    # -- reads ---------------------------------------------------------------------------------

    async def staff(self) -> list[str]:
        """Staff with customer contacts (get_follow_user_list), or the configured list."""
        if self.config.staff_userids:
            return list(self.config.staff_userids)
        data = await self.client.get("externalcontact/get_follow_user_list", {})
        return [str(u) for u in data.get("follow_user") or []]

    async def by_user(self, userids: Sequence[str], cursor: str | None, limit: int = 100) -> dict[str, Any]:
        """batch/get_by_user: one page of (external_contact, follow_info) for up to 100 staff."""
        body: dict[str, Any] = {"userid_list": list(userids)[:100], "limit": limit}
        if cursor:
            body["cursor"] = cursor
        return await self.client.post("externalcontact/batch/get_by_user", body)

    async def contact(self, external_userid: str) -> dict[str, Any] | None:
        """get: the contact and every follow_user (paged past 500); None when no staff follows them (84061)."""
        person: dict[str, Any] | None = None
        cursor = ""
        for _ in range(MAX_FOLLOW_PAGES):
            params = {"external_userid": external_userid} | ({"cursor": cursor} if cursor else {})
            try:
                data = await self.client.get("externalcontact/get", params)
            except WeComAPIError as exc:
                if exc.errcode == 84061:
                    return None
                raise
            if person is None:
                person = {"external_contact": data.get("external_contact") or {}, "follow_user": []}
            person["follow_user"] += [f for f in data.get("follow_user") or [] if isinstance(f, Mapping)]
            cursor = str(data.get("next_cursor") or "")
            if not cursor:
                break
        return person

    async def corp_tags(self) -> list[dict[str, Any]]:
        """get_corp_tag_list: every group with its tags."""
        data = await self.client.post("externalcontact/get_corp_tag_list", {"tag_id": [], "group_id": []})
        return [g for g in data.get("tag_group") or [] if isinstance(g, dict)]

    async def add_corp_tags(self, group_name: str, names: Sequence[str]) -> dict[str, Any]:
        """add_corp_tag: create tags in a group (this app may edit only the tags it created)."""
        data = await self.client.post("externalcontact/add_corp_tag", {"group_name": group_name,
                                                                        "tag": [{"name": n[:30]} for n in names]})
        return dict(data.get("tag_group") or {})

    async def mark_tag(self, userid: str, external_userid: str, add: Sequence[str], remove: Sequence[str]) -> None:
        """mark_tag: tags live on each (staff member, customer) pair."""
        await self.client.post("externalcontact/mark_tag", {"userid": userid, "external_userid": external_userid,
                                                             "add_tag": list(add), "remove_tag": list(remove)})

    async def add_contact_way(self, state: str, users: Sequence[str], remark: str = "") -> dict[str, Any]:
        """A 渠道活码 (scene 2: QR code) whose `state` comes back on every customer it brings."""
        return await self.client.post("externalcontact/add_contact_way", {
            "type": 1 if len(users) == 1 else 2, "scene": 2, "state": state[:30], "remark": remark[:30],
            "skip_verify": True, "user": list(users)})

    async def groupmsg_task(self, msgid: str) -> list[dict[str, Any]]:
        data = await self.client.post("externalcontact/get_groupmsg_task", {"msgid": msgid, "limit": 1000})
        return [t for t in data.get("task_list") or [] if isinstance(t, dict)]

    async def groupmsg_results(self, msgid: str, userid: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(1000):
            body: dict[str, Any] = {"msgid": msgid, "userid": userid, "limit": 1000}
            if cursor:
                body["cursor"] = cursor
            data = await self.client.post("externalcontact/get_groupmsg_send_result", body)
            rows += [r for r in data.get("send_list") or [] if isinstance(r, dict)]
            cursor = str(data.get("next_cursor") or "")
            if not cursor:
                break
        return rows

    # -- outbound ------------------------------------------------------------------------------

    def rate_limits(self, message: OutboundMessage) -> Sequence[RateLimit]:
        return (RateLimit(f"wecom:{self.corp_id}:contacts", 10.0, 1.0),)

    async def send(self, message: OutboundMessage) -> SendResult:
        """A welcome (send_welcome_msg with its code) or one staff member's 群发 task (add_msg_template)."""
        found = message.metadata.get("wecom")
        op: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        try:
            if op.get("op") == "welcome":
                await self.client.post("externalcontact/send_welcome_msg", {
                    "welcome_code": op.get("code"), "text": {"content": message.text or ""}})
                return SendResult()
            if op.get("op") == "mass":
                data = await self.client.post("externalcontact/add_msg_template", {
                    "chat_type": "single", "external_userid": list(op.get("external_userids") or []),
                    "sender": op.get("sender"), "text": {"content": message.text or ""}})
                return SendResult(external_id=str(data.get("msgid") or ""), data={"fail_list": data.get("fail_list")})
        except (WeComAPIError, WeComNetworkError) as exc:
            raise send_error(exc) from None
        raise PermanentSendError("客户联系 sends welcomes and staff-confirmed 群发 only; use 微信客服 to chat",
                                 code="unsupported")

    async def test_connection(self) -> str:
        try:
            staff = await self.staff()
        except (WeComAPIError, WeComNetworkError) as exc:
            raise send_error(exc) from None
        return f"ok: {len(staff)} staff members have customer contacts"
