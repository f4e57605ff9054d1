"""An in-memory channel for tests and the demo's customer simulator: sends land in a list."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, ClassVar

from channels import safejson
from channels.base import AdapterSettings, Capabilities, ChannelAdapter, IngestSink
from channels.registry import register
from scrm.domain import (
    ContactProfile,
    InboundMessage,
    OutboundMessage,
    PermanentSendError,
    SendResult,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
)


class MemorySettings(AdapterSettings):
    buttons: bool = True
    fail_with: str | None = None  # tests: every send fails permanently with this reason


@register
class MemoryChannelAdapter(ChannelAdapter):
    """Keeps sent messages per inbox in `MemoryChannelAdapter.sent` (process-local)."""

    channel_type = "memory"
    display_name = "Simulator"
    capabilities = Capabilities(buttons=True, max_buttons=10)
    settings_model = MemorySettings
    sent: ClassVar[dict[int, list[OutboundMessage]]] = defaultdict(list)

    async def handle_webhook(self, request: WebhookRequest, sink: IngestSink) -> WebhookResponse:
        # Only the demo simulator posts here (it is not exposed for other channels' inboxes).
        try:
            data: dict[str, Any] = safejson.loads(request.body)
            item = InboundMessage(
                external_id=str(data["id"]), sender_id=str(data["sender"]), text=data.get("text"),
                profile=ContactProfile(name=data.get("name")),
                content_type="postback" if data.get("choice") else "text",
                payload={"choice": data["choice"]} if data.get("choice") else {},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WebhookError(400, f"bad simulator message: {exc}") from None
        outcome = (await sink([item]))[0]
        return WebhookResponse(200, json.dumps({"message_id": outcome.message_id}).encode(), "application/json")

    async def send(self, message: OutboundMessage) -> SendResult:
        if self.settings.fail_with:  # type: ignore[attr-defined]
            raise PermanentSendError(self.settings.fail_with)  # type: ignore[attr-defined]
        self.sent[self.inbox.id].append(message)
        return SendResult(external_id=f"mem-{message.delivery_id}")
