"""The `web` channel adapter: delivery is a live push to the visitor; the history is the database."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from channels.base import Capabilities, ChannelAdapter, IngestSink
from channels.registry import register
from channels.web.config import WebSecrets, WebSettings
from scrm.domain import (
    OutboundMessage,
    PermanentSendError,
    SendResult,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
)

log = logging.getLogger("scrm.channels.web")


def visitor_topic(inbox_id: int, visitor: str) -> str:
    """The live-push topic of one visitor (every tab and device of theirs listens on it)."""
    return f"{inbox_id}:{visitor}"


@register
class WebChatAdapter(ChannelAdapter):
    channel_type = "web"
    display_name = "Web chat"
    # A push may be repeated safely: the widget shows each message id once.
    capabilities = Capabilities(buttons=True, max_buttons=10, attachments=True, idempotent_send=True)
    settings_model = WebSettings
    secrets_model = WebSecrets

    @classmethod
    def init_secrets(cls, secrets_: Any) -> dict[str, Any]:
        out = dict(secrets_)
        out.setdefault("hmac_secret", secrets.token_hex(32))
        out.setdefault("token_key", secrets.token_urlsafe(48))
        return out

    async def handle_webhook(self, request: WebhookRequest, sink: IngestSink) -> WebhookResponse:
        raise WebhookError(404, "web chat visitors use /chat/{inbox}", code="not_found")

    async def send(self, message: OutboundMessage) -> SendResult:
        """Nudge the visitor's live connections; they read the stored message themselves."""
        if message.message_id is None or message.conversation_id is None:
            raise PermanentSendError("web chat delivers conversation messages only; visitors get broadcasts by email",
                                     code="not_supported")
        payload = json.dumps({"t": "m", "c": message.conversation_id, "m": message.message_id})
        try:
            await self.runtime.push(visitor_topic(self.inbox.id, message.recipient_id), payload)
        except Exception as exc:  # noqa: BLE001 - the message is stored: the visitor gets it on reconnect
            log.warning("live push to a web visitor failed (%s); they catch up on reconnect", type(exc).__name__)
        return SendResult(external_id=f"web-{message.delivery_id}")

    async def test_connection(self) -> str:
        origins = self.settings.allowed_origins  # type: ignore[attr-defined]
        return f"ok: {len(origins)} allowed origin(s)" if origins else "ok: no site allowed yet (H5 page only)"
