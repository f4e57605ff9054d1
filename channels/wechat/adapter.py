"""The WeChat Official Account channel (`wechat_oa`): callbacks in, customer-service API out.

WeChat's 5-second rule shapes `handle_webhook`: the message is committed by the sink first, then
the bot gets what is left of `passive_reply_timeout` to answer in the HTTP response; otherwise
`success` is answered and the outbox worker delivers the answer via the customer-service API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import cast

from wechatpy.crypto import WeChatCrypto
from wechatpy.replies import TextReply

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
from channels.wechat.api import WeChatClient
from channels.wechat.callback import (
    Callback,
    CallbackMode,
    check_plain_signature,
    check_timestamp,
    open_callback,
)
from channels.wechat.inbound import to_items
from channels.wechat.mass import send_wechat_op
from channels.wechat.outbound import (
    attachment_payload,
    message_text,
    news_payload,
    send_error,
    split_utf8,
    template_payload,
    text_payloads,
)
from channels.wechat.settings import WeChatSecrets, WeChatSettings
from channels.wechat.token import AccessTokenProvider
from channels.wechat.transport import WeChatAPIError, WeChatNetworkError
from scrm.domain import (
    PASSIVE_REPLY_UNTIL,
    Attachment,
    ContentType,
    Inbound,
    InboundMessage,
    IngestOutcome,
    OutboundMessage,
    PermanentSendError,
    SendResult,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
)

log = logging.getLogger(__name__)

SUCCESS = WebhookResponse(status=200, body=b"success", content_type="text/plain")
# Sends per second per AppID across all workers. WeChat documents no per-second limit for
# custom/send, only daily quotas (45009) and per-user quotas (45047); 20/s keeps a broadcast
# from burning the daily quota in minutes and stays well clear of anti-spam throttling.
SENDS_PER_SECOND = 20.0
PASSIVE_CONTENT = {ContentType.TEXT, ContentType.VOICE, ContentType.POSTBACK}


@register
class WeChatAdapter(ChannelAdapter):
    """WeChat Official Account: signed / AES callbacks, customer-service and template messages."""

    channel_type = "wechat_oa"
    display_name = "WeChat Official Account"
    capabilities = Capabilities(
        buttons=False,
        max_text_length=2048,
        attachments=True,
        reply_window=timedelta(hours=48),
        idempotent_send=False,
    )
    settings_model = WeChatSettings
    secrets_model = WeChatSecrets

    def __init__(self, inbox: InboxConfig, runtime: ChannelRuntime) -> None:
        super().__init__(inbox, runtime)
        self.config = cast(WeChatSettings, self.settings)
        self.keys = cast(WeChatSecrets, self.secrets)
        app_id = self.keys.app_id or self.config.app_id
        if not app_id:
            raise ValueError("a wechat_oa inbox needs an app_id (settings or secrets)")
        self.app_id = app_id
        self._token = self.keys.token.get_secret_value()
        aes_keys = [self.keys.encoding_aes_key, self.keys.previous_encoding_aes_key]
        self._cryptos = [WeChatCrypto(self._token, k.get_secret_value(), app_id) for k in aes_keys if k]
        self.callback_mode: CallbackMode = self.config.callback_mode or ("safe" if self._cryptos else "plaintext")
        self.replays = ReplayGuard(runtime.cache, scope=f"wechat:{inbox.id}",
                                   window=self.config.timestamp_window_seconds)
        self.tokens = AccessTokenProvider(
            app_id=app_id,
            app_secret=self.keys.app_secret.get_secret_value(),
            cache=runtime.cache,
            http=lambda: self.runtime.http,
            base_url=self.config.api_base_url,
            use_stable_token=self.config.use_stable_token,
        )
        self.client = WeChatClient(
            http=lambda: self.runtime.http, base_url=self.config.api_base_url, tokens=self.tokens
        )
        self.clock = time.time  # replaced in tests replaying recorded callbacks

    # -- inbound -----------------------------------------------------------------------------

    async def handle_webhook(self, request: WebhookRequest, sink: IngestSink) -> WebhookResponse:
        """GET: echo `echostr` to a signed verification. POST: authenticate, store, answer."""
        method = request.method.upper()
        if method == "GET":
            return self._verify_url(request)
        if method != "POST":
            raise WebhookError(405, "only GET and POST are supported", code="method_not_allowed")
        started = time.monotonic()
        callback = open_callback(
            request.query,
            request.body,
            token=self._token,
            cryptos=self._cryptos,
            window=self.config.timestamp_window_seconds,
            now=self.clock(),
            mode=self.callback_mode,
        )
        if callback.crypto is None:  # plaintext: the signature does not cover the body
            await self.replays.check(request.query.get("timestamp", ""), request.query.get("nonce", ""), request.body)
        try:
            items = to_items(callback.xml, callback.fields)
        except Exception:
            log.exception("wechat callback could not be translated (inbox %s)", self.inbox.id)
            raise WebhookError(400, "malformed message", code="bad_message") from None
        if not items:
            return SUCCESS
        items, waits = self._mark_passive_wait(items, started)
        outcomes = await sink(items)
        # A platform retry always asks: the first answer it never received may be waiting for it.
        retried = bool(outcomes) and outcomes[0].duplicate
        reply = await self._passive_reply(items, outcomes, started) if waits or retried else None
        if reply is None:
            return SUCCESS
        return self._reply_response(callback, reply)

    def _verify_url(self, request: WebhookRequest) -> WebhookResponse:
        check_plain_signature(self._token, request.query)
        check_timestamp(request.query.get("timestamp"), self.config.timestamp_window_seconds, self.clock())
        echostr = request.query.get("echostr")
        if not echostr:
            raise WebhookError(400, "missing echostr", code="missing_fields")
        return WebhookResponse(status=200, body=echostr.encode("utf-8"), content_type="text/plain")

    def _mark_passive_wait(self, items: list[Inbound], started: float) -> tuple[list[Inbound], bool]:
        """Decide, before storing, whether this callback waits for the bot's answer; if so tell the bot
        (through the stored message) until when, so the worker leaves that answer to the callback
        instead of sending it through the API first. A callback that did not say so never waits."""
        item = items[0]
        remaining = self.config.passive_reply_timeout - (time.monotonic() - started)
        if (not isinstance(item, InboundMessage) or item.content_type not in PASSIVE_CONTENT or remaining <= 0
                or not self.runtime.expects_passive_reply()):
            return items, False
        until = round(time.time() + remaining, 3)
        return [replace(item, payload={**item.payload, PASSIVE_REPLY_UNTIL: until}), *items[1:]], True

    async def _passive_reply(
        self, items: Sequence[Inbound], outcomes: Sequence[IngestOutcome], started: float
    ) -> OutboundMessage | None:
        item = items[0]
        if not outcomes or not isinstance(item, InboundMessage) or item.content_type not in PASSIVE_CONTENT:
            return None
        if outcomes[0].ignored_reason:
            return None
        remaining = self.config.passive_reply_timeout - (time.monotonic() - started)
        if remaining <= 0:
            return None
        try:
            return await self.runtime.passive_reply(outcomes[0], remaining, accept=self._fits_passive_reply)
        except Exception:  # the message is stored: answering `success` is still right
            log.exception("wechat passive reply failed (inbox %s)", self.inbox.id)
            return None

    @staticmethod
    def _fits_passive_reply(reply: OutboundMessage) -> bool:
        """A passive reply is one text message of at most 2048 bytes; the rest goes to the worker."""
        if reply.attachments or reply.content_type not in (ContentType.TEXT, ContentType.POSTBACK):
            return False
        text = message_text(reply)
        return bool(text) and len(split_utf8(text)) == 1

    def _reply_response(self, callback: Callback, reply: OutboundMessage) -> WebhookResponse:
        text = message_text(reply)
        if not text:
            log.warning("wechat passive reply %s has no text; answering success", reply.delivery_id)
            return SUCCESS
        chunks = split_utf8(text)
        if len(chunks) > 1:
            # Not reached: _fits_passive_reply leaves long answers to the worker.
            log.warning("wechat passive reply %s longer than 2048 bytes; truncated", reply.delivery_id)
        # wechatpy does not escape CDATA: "]]>" in an answer would end the element early.
        content = chunks[0].replace("]]>", "]]]]><![CDATA[>")
        xml = TextReply(
            source=callback.fields["ToUserName"], target=callback.fields["FromUserName"], content=content
        ).render()
        if callback.crypto is not None:
            xml = callback.crypto.encrypt_message(xml, callback.nonce, str(int(self.clock())))
        return WebhookResponse(status=200, body=str(xml).encode("utf-8"), content_type="application/xml")

    # -- outbound ----------------------------------------------------------------------------

    def rate_limits(self, message: OutboundMessage) -> Sequence[RateLimit]:
        """One shared budget per AppID (see SENDS_PER_SECOND)."""
        return (RateLimit(f"wechat:{self.app_id}:global", SENDS_PER_SECOND, 1.0),)

    async def send(self, message: OutboundMessage) -> SendResult:
        """Customer-service message (text / image / voice / news) or a template notification."""
        spec = message.metadata.get("wechat")
        if isinstance(spec, Mapping):  # 群发, its preview, a subscription message
            return await send_wechat_op(self.client, message, spec)
        try:
            if message.content_type == ContentType.TEMPLATE:
                result = await self.client.send_template(template_payload(message, self.config.template))
                msgid = result.get("msgid")
                return SendResult(external_id=str(msgid) if msgid is not None else None)
            payloads = []
            news = news_payload(message)
            if news is not None:
                payloads.append(news)
            else:
                payloads += text_payloads(message.recipient_id, message_text(message))
            for att in message.attachments:  # upload everything before sending anything
                payloads.append(
                    await attachment_payload(message.recipient_id, att, self.client, self.runtime.storage)
                )
            if not payloads:
                raise PermanentSendError("nothing to send: no text and no attachment", code="empty_message")
            for payload in payloads:
                await self.client.send_custom(payload)
            return SendResult(data={"parts": len(payloads)})
        except (WeChatAPIError, WeChatNetworkError) as exc:
            raise send_error(exc) from None
        except KeyError as exc:
            raise PermanentSendError(f"stored attachment is missing: {exc}", code="missing_file") from None

    async def mass_status(self, msg_id: str) -> str | None:
        """message/mass/get: where a 群发 job stands (SEND_SUCCESS, SENDING, SEND_FAIL, DELETE)."""
        try:
            result = await self.client.mass_get(msg_id)
        except (WeChatAPIError, WeChatNetworkError) as exc:
            raise send_error(exc) from None
        status = result.get("msg_status")
        return str(status) if status is not None else None

    async def fetch_attachment(self, attachment: Attachment) -> FetchedFile:
        """media/get (temporary media, kept 3 days); images fall back to their PicUrl."""
        media_id = attachment.source.get("media_id")
        pic_url = attachment.source.get("pic_url")
        try:
            if media_id:
                try:
                    fetched = await self.client.get_media(str(media_id))
                except WeChatAPIError:
                    if not pic_url:
                        raise
                    fetched = await self.client.download(str(pic_url))
            elif pic_url:
                fetched = await self.client.download(str(pic_url))
            else:
                raise PermanentSendError("attachment has no media_id", code="bad_attachment")
        except (WeChatAPIError, WeChatNetworkError) as exc:
            raise send_error(exc) from None
        return FetchedFile(
            data=fetched.data,
            filename=fetched.filename or attachment.filename,
            mime_type=fetched.mime_type or attachment.mime_type,
        )

    async def test_connection(self) -> str:
        """Fetch (or reuse) the access_token: proves AppID, AppSecret and the IP whitelist."""
        try:
            await self.tokens.get()
        except (WeChatAPIError, WeChatNetworkError) as exc:
            raise send_error(exc) from None
        return f"ok: access_token available for AppID {self.app_id}"
