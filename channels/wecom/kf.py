"""The 微信客服 channel (`wecom_kf`): encrypted callbacks that say "pull", kf/sync_msg, kf/send_msg.

A kf callback carries no message, only a sync token: the adapter asks the application to record
that a pull is needed (durably, before answering) and answers 200 at once; the pull runs after the
answer (scrm.services.wecom.kf_sync), calling `sync_page` and `translate` here. Sending, session
state changes (service_state/trans) and event-code messages (welcome, pool, closing) all go
through `send`, called by the outbox worker only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from wechatpy.enterprise.crypto import WeChatCrypto

from channels.base import (
    Capabilities,
    ChannelAdapter,
    ChannelRuntime,
    FetchedFile,
    InboxConfig,
    IngestSink,
    RateLimit,
)
from channels.registry import register
from channels.replay import ReplayGuard
from channels.wecom.api import MediaTooLarge, WeComAPIError, WeComClient, WeComNetworkError
from channels.wecom.callback import event_name, open_callback, text, verify_url
from channels.wecom.kf_inbound import KfRecord, translate
from channels.wecom.kf_outbound import build_parts, menu_body, part_msgid, send_error, split_utf8
from channels.wecom.session import STATE_NAMES, TEXT_UNSENT, current_state, reply_code, reply_code_key
from channels.wecom.settings import WeComKfSecrets, WeComKfSettings
from channels.wecom.token import WeComTokenProvider
from scrm.domain import (
    Attachment,
    OutboundMessage,
    PermanentSendError,
    SendResult,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
)

log = logging.getLogger(__name__)

OK = WebhookResponse(status=200, body=b"", content_type="text/plain")
SENDS_PER_SECOND = 20.0  # per corp across workers: WeCom publishes no kf send rate; stay well clear


@register
class WeComKfAdapter(ChannelAdapter):
    """微信客服: customers from WeChat chats, Mini Programs, 视频号, links and QR codes."""

    channel_type = "wecom_kf"
    display_name = "WeCom 微信客服"
    capabilities = Capabilities(
        buttons=True,
        max_buttons=10,
        max_text_length=680,  # 2048 bytes of Chinese
        attachments=True,
        reply_window=timedelta(hours=48),
        max_replies_in_window=5,
        idempotent_send=True,  # our msgid: WeCom refuses a repeated one
        survey_on_close=True,  # the closing code's menu (send_msg_on_event) is the last message WeCom lets through
    )
    settings_model = WeComKfSettings
    secrets_model = WeComKfSecrets

    def __init__(self, inbox: InboxConfig, runtime: ChannelRuntime) -> None:
        super().__init__(inbox, runtime)
        self.config = cast(WeComKfSettings, self.settings)
        self.keys = cast(WeComKfSecrets, self.secrets)
        self.corp_id = self.config.corp_id
        self.open_kfid = self.config.open_kfid
        self.crypto = WeChatCrypto(self.keys.token.get_secret_value(),
                                   self.keys.encoding_aes_key.get_secret_value(), self.corp_id)
        self.tokens = WeComTokenProvider(corp_id=self.corp_id, secret=self.keys.secret.get_secret_value(),
                                         cache=runtime.cache, http=lambda: self.runtime.http,
                                         base_url=self.config.api_base_url)
        self.client = WeComClient(http=lambda: self.runtime.http, base_url=self.config.api_base_url,
                                  tokens=self.tokens)
        self.clock = time.time  # replaced in tests replaying recorded callbacks

    # -- inbound -----------------------------------------------------------------------------

    async def handle_webhook(self, request: WebhookRequest, sink: IngestSink) -> WebhookResponse:
        """GET: answer the decrypted echostr. POST: authenticate, note the pull, answer 200 at once."""
        method = request.method.upper()
        window = self.config.timestamp_window_seconds
        if method == "GET":
            plain = verify_url(self.crypto, request.query, window=window, now=self.clock())
            return WebhookResponse(status=200, body=plain.encode("utf-8"), content_type="text/plain")
        if method != "POST":
            raise WebhookError(405, "only GET and POST are supported", code="method_not_allowed")
        callback = open_callback(self.crypto, request.query, request.body, window=window, now=self.clock())
        fields = callback.fields
        event = event_name(fields)
        if event == "kf_msg_or_event":
            # OpenKfId may be missing (seen in 2022): the inbox's own account is meant then.
            open_kfid = text(fields, "OpenKfId") or self.open_kfid
            # The answer waits for the durable note only, and a kf_msg_or_event skips the replay cache:
            # msg_signature covers the Encrypt text (all that is read of the body), so a replay can only
            # repeat a body WeCom signed, and this event carries no message: a replayed one only makes a
            # pull that finds nothing new. The check (a Redis round trip, ~20-100 us of this event loop per
            # callback, and a wake-up of Redis on the 2 cores the burst shares) bought nothing here: its
            # answer was not waited for, and a pair it recorded could only refuse a later body signed
            # with the same pair, which only the token's holder can make. Every other callback is checked.
            await self.runtime.request_pull({"open_kfid": open_kfid, "token": text(fields, "Token") or None})
            return OK
        # The same replay cache as WeChat's: a (timestamp, nonce) pair is good for one body only.
        await ReplayGuard(self.runtime.cache, scope=f"wecom_kf:{self.inbox.id}", window=window).check(
            request.query.get("timestamp", ""), request.query.get("nonce", ""), request.body)
        if event == "kf_account_auth_change":
            added, removed = text(fields, "AuthAddOpenKfId"), text(fields, "AuthDelOpenKfId")
            log.info("wecom kf: kf_account_auth_change add=%r del=%r (inbox %s)", added, removed, self.inbox.id)
            if self.open_kfid in (added, removed):
                await self.runtime.state.set("authorized", self.open_kfid == added)
            return OK
        log.info("wecom kf: ignoring callback %r on inbox %s: not a 微信客服 event", event or "?", self.inbox.id)
        return OK

    async def sync_page(self, *, cursor: str | None, token: str | None, open_kfid: str | None = None,
                        limit: int = 1000) -> dict[str, Any]:
        """One kf/sync_msg page: {next_cursor, has_more, msg_list}; the token is optional (stricter limit)."""
        payload: dict[str, Any] = {"open_kfid": open_kfid or self.open_kfid, "limit": limit,
                                   "voice_format": self.config.voice_format}
        if cursor:
            payload["cursor"] = cursor
        if token:
            payload["token"] = token
        page = await self.client.post("kf/sync_msg", payload)
        if not isinstance(page.get("msg_list", []), list):
            raise WeComNetworkError("kf/sync_msg answered msg_list that is not a list")
        return page

    @staticmethod
    def translate(msg_list: Sequence[Any]) -> list[KfRecord]:
        """Translate a page's items (non-objects are skipped with a log line)."""
        records = []
        for item in msg_list:
            if not isinstance(item, Mapping):
                log.warning("wecom kf: ignoring a msg_list entry that is not an object")
                continue
            records.append(translate(item))
        return records

    async def customers(self, external_userids: Sequence[str]) -> list[dict[str, Any]]:
        """kf/customer/batchget in batches of up to 100: nickname, avatar, gender, unionid."""
        found: list[dict[str, Any]] = []
        ids = list(dict.fromkeys(external_userids))
        for start in range(0, len(ids), 100):
            data = await self.client.post("kf/customer/batchget", {"external_userid_list": ids[start:start + 100],
                                                                   "need_enter_session_context": 0})
            found += [c for c in data.get("customer_list") or [] if isinstance(c, dict)]
            invalid = data.get("invalid_external_userid") or []
            if invalid:
                log.info("wecom kf: %d external_userids unknown to batchget", len(invalid))
        return found

    async def add_contact_way(self, scene: str) -> str:
        """kf/add_contact_way: a link (also shown as a QR code) for one acquisition source."""
        data = await self.client.post("kf/add_contact_way", {"open_kfid": self.open_kfid, "scene": scene})
        url = data.get("url")
        if not isinstance(url, str) or not url:
            raise WeComAPIError(-1, "kf/add_contact_way answered without url")
        return url

    async def servicers(self) -> list[dict[str, Any]]:
        """kf/servicer/list: the account's servicers (userid, status 0 receiving / 1 stopped)."""
        data = await self.client.get("kf/servicer/list", {"open_kfid": self.open_kfid})
        return [s for s in data.get("servicer_list") or [] if isinstance(s, dict)]

    async def service_state(self, external_userid: str) -> tuple[int, str | None]:
        """kf/service_state/get: (state 0-4, servicer userid when in state 3)."""
        data = await self.client.post("kf/service_state/get", {"open_kfid": self.open_kfid,
                                                               "external_userid": external_userid})
        return int(data.get("service_state") or 0), data.get("servicer_userid") or None

    @classmethod
    def reply_blocked(cls, identity_attributes: Mapping[str, Any], last_inbound_at: datetime | None = None) -> str | None:
        """kf/send_msg works in 未处理 (0) and 智能助手 (1) only (95018 otherwise): say why before anyone tries."""
        state, servicer = current_state(identity_attributes, last_inbound_at=last_inbound_at)
        if state == 3 and reply_code(identity_attributes) is not None:
            return None  # the msg_code of the move into 人工 carries one text reply (send_msg_on_event)
        if state == 3:
            return (f"the WeCom session is with servicer {servicer or '?'} (人工): WeCom refuses API messages then "
                    "(95018); reply from the WeCom client (the reply shows here) or hand the conversation back")
        if state == 2:
            return ("the WeCom session waits in the pool (待接入池), where WeCom refuses API messages (95018); "
                    "take it over as an agent mapped to a WeCom userid")
        if state == 4:
            return ("the WeCom session has ended (已结束): WeCom refuses API messages until the customer writes "
                    "again (95018)")
        return None

    # -- outbound ----------------------------------------------------------------------------

    def rate_limits(self, message: OutboundMessage) -> Sequence[RateLimit]:
        """One shared budget per corp's kf API."""
        return (RateLimit(f"wecom:{self.corp_id}:kf", SENDS_PER_SECOND, 1.0),)

    async def send(self, message: OutboundMessage) -> SendResult:
        """kf/send_msg (our msgid), or a session-state change / event-code message named in the metadata."""
        op = message.metadata.get("wecom") if isinstance(message.metadata.get("wecom"), Mapping) else None
        try:
            if op is not None and op.get("op") == "service_state":
                return await self._change_state(message, op)
            if op is not None and op.get("op") == "event_code":
                expires = op.get("expires_at")
                if isinstance(expires, (int, float)) and self.clock() > expires:
                    raise PermanentSendError(f"the WeCom {op.get('scene') or 'event'} code expired (valid 20 s) "
                                             "before it could be sent", code="code_expired")
                return await self._send_on_event(message, str(op.get("code") or ""), part_msgid(message.idempotency_key, 0))
            code = reply_code(message.recipient_data) if op is None else None
            if code is not None:
                return await self._first_reply(message, code)
            parts = await build_parts(message, self.client, self.runtime.storage)
            first = part_msgid(message.idempotency_key, 0)
            for index, part in enumerate(parts):
                body = {"touser": message.recipient_id, "open_kfid": self.open_kfid,
                        "msgid": part_msgid(message.idempotency_key, index), **part}
                await self.client.post("kf/send_msg", body)
            return SendResult(external_id=first, data={"parts": len(parts)})
        except (WeComAPIError, WeComNetworkError) as exc:
            raise send_error(exc) from None
        except KeyError as exc:
            raise PermanentSendError(f"stored attachment is missing: {exc}", code="missing_file") from None

    async def _change_state(self, message: OutboundMessage, op: Mapping[str, Any]) -> SendResult:
        """service_state/trans, and the pool / closing message (and survey) with the code the move returns.

        The message needs that code: when WeCom is in the target state already, or the move returns no
        code, or the code is refused, the delivery fails with TEXT_UNSENT (the state did change: the
        application remembers the target, not the state before) so the thread shows why."""
        target = int(op["service_state"])
        current, servicer = await self.service_state(message.recipient_id)
        wanted = op.get("servicer_userid") or None
        name = STATE_NAMES.get(target, str(target))
        if current == target and (target != 3 or servicer == wanted):
            if message.text:
                raise PermanentSendError(f"the WeCom session was {name} already, so no code came with which to send "
                                         "this message (WeCom refuses API messages then, 95018)", code=TEXT_UNSENT)
            return SendResult(external_id=None, data={"service_state": target, "unchanged": True})
        body: dict[str, Any] = {"open_kfid": self.open_kfid, "external_userid": message.recipient_id,
                                "service_state": target}
        if wanted:
            body["servicer_userid"] = wanted
        data = await self.client.post("kf/service_state/trans", body)
        code = data.get("msg_code")
        log.info("wecom kf: %s moved %s -> %s", message.recipient_id, STATE_NAMES.get(current), name)
        if message.text:  # the pool / closing message WeCom lets us send with this code
            if not code:
                raise PermanentSendError(f"the WeCom session moved to {name} without a code to send this message "
                                         "with (WeCom refuses API messages then, 95018)", code=TEXT_UNSENT)
            try:
                await self._send_on_event(message, str(code), part_msgid(message.idempotency_key, 1))
            except (WeComAPIError, WeComNetworkError) as exc:  # a retry would find the move made and no code
                raise PermanentSendError(f"the WeCom session moved to {name}, but WeCom refused the message sent "
                                         f"with its code: {send_error(exc).reason}", code=TEXT_UNSENT) from None
            return SendResult(external_id=part_msgid(message.idempotency_key, 1),
                              data={"service_state": target, "previous": current})
        if code and target == 3:  # kept for the agent's first reply (wecom_session.on_state_sent copies it)
            await self.runtime.state.set(reply_code_key(message.recipient_id), {"code": str(code), "servicer": wanted})
        return SendResult(external_id=None, data={"service_state": target, "previous": current})

    async def _first_reply(self, message: OutboundMessage, code: str) -> SendResult:
        """An agent's reply in 人工 (3) through the move's msg_code: one text message (PROTOCOL.md §4)."""
        parts = split_utf8(message.text or "")
        if len(parts) != 1 or message.attachments or message.choices:
            raise PermanentSendError("in 人工 WeCom lets the API send one text reply (up to 2048 bytes) with the "
                                     "session's code; send files and longer replies from the WeCom client",
                                     code="reply_code_text_only")
        msgid = part_msgid(message.idempotency_key, 0)
        try:
            await self.client.post("kf/send_msg_on_event", {"code": code, "msgid": msgid, "msgtype": "text",
                                                            "text": {"content": parts[0]}})
        except WeComAPIError as exc:
            if exc.errcode in (45009, 45033, -1, 40014, 42001):
                raise
            raise PermanentSendError(f"WeCom refused the one reply its 人工 code allows [{exc.errcode}]: reply from "
                                     "the WeCom client", code=str(exc.errcode)) from None
        return SendResult(external_id=msgid, data={"via": "msg_code"})

    async def _send_on_event(self, message: OutboundMessage, code: str, msgid: str) -> SendResult:
        if not code:
            raise PermanentSendError("no event code to answer with", code="no_code")
        body: dict[str, Any] = {"code": code, "msgid": msgid}
        if message.choices:
            body |= {"msgtype": "msgmenu", "msgmenu": menu_body(message.text, message)}
        else:
            body |= {"msgtype": "text", "text": {"content": message.text or ""}}
        await self.client.post("kf/send_msg_on_event", body)
        return SendResult(external_id=msgid)

    async def fetch_attachment(self, attachment: Attachment) -> FetchedFile:
        """media/get (media ids live 3 days)."""
        media_id = attachment.source.get("media_id")
        if not media_id:
            raise PermanentSendError("attachment has no media_id", code="bad_attachment")
        try:
            fetched = await self.client.get_media(str(media_id), max_bytes=self.config.media_max_bytes)
        except MediaTooLarge as exc:
            raise PermanentSendError(exc.errmsg, code="too_large") from None
        except (WeComAPIError, WeComNetworkError) as exc:
            raise send_error(exc) from None
        return FetchedFile(data=fetched.data, filename=fetched.filename or attachment.filename,
                           mime_type=fetched.mime_type or attachment.mime_type)

    async def test_connection(self) -> str:
        """Fetch the token and find our open_kfid among the accounts this app may manage."""
        try:
            await self.tokens.get()
            data = await self.client.post("kf/account/list", {"offset": 0, "limit": 100})
        except (WeComAPIError, WeComNetworkError) as exc:
            raise send_error(exc) from None
        for account in data.get("account_list") or []:
            if isinstance(account, dict) and account.get("open_kfid") == self.open_kfid:
                if account.get("manage_privilege") is False:
                    return f"warning: this app may not manage kf account {account.get('name')!r}"
                try:
                    receiving = sum(1 for s in await self.servicers() if s.get("status") == 0)
                except (WeComAPIError, WeComNetworkError):
                    receiving = 0
                return f"ok: kf account {account.get('name')!r} is reachable ({receiving} servicers receiving)"
        raise PermanentSendError(f"kf account {self.open_kfid} is not among this app's accounts", code="95004")

