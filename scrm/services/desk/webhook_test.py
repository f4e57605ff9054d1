"""The "send test" button of an outgoing webhook: a signed sample delivery through the real sender,
recorded in the delivery log like any other."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from scrm.db.models import utcnow
from scrm.db.models_desk import WebhookDelivery, WebhookSubscription
from scrm.services.desk import webhooks_out

if TYPE_CHECKING:
    from scrm.context import AppContext

TEST_EVENT = "webhook.test"
SETTLED = ("delivered", "failed")


async def send_test(ctx: AppContext, webhook_id: int, wait: float = webhooks_out.TIMEOUT + 3) -> WebhookDelivery | None:
    """Queue a test delivery, wake the sender, and wait (bounded) for its first attempt's result."""
    async with ctx.db.transaction() as s:
        hook = await s.get(WebhookSubscription, webhook_id)
        if hook is None:
            return None
        event_id = f"test-{uuid.uuid4().hex}"
        now = utcnow()
        delivery = WebhookDelivery(
            webhook_id=hook.id, event_id=event_id, event=TEST_EVENT, status="queued", attempts=0, next_attempt_at=now,
            created_at=now, payload={"id": event_id, "event": TEST_EVENT, "at": now.isoformat(),
                                     "data": {"message": "scrm test delivery / 测试推送", "webhook": hook.name}})
        s.add(delivery)
        await s.flush()
        delivery_id = delivery.id
    webhooks_out.wake(ctx)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        async with ctx.db.session() as s:
            row = await s.get(WebhookDelivery, delivery_id)
        if row is not None and row.status == "queued" and row.attempts > 0:
            return await _no_retry(ctx, delivery_id)
        if row is None or row.status in SETTLED:
            return row
        if loop.time() >= deadline:
            return row  # still queued or sending: the log shows how it ends
        await asyncio.sleep(0.1)


async def _no_retry(ctx: AppContext, delivery_id: int) -> WebhookDelivery | None:
    """A failed test is not retried with backoff: the admin sees the answer and fixes the endpoint."""
    async with ctx.db.transaction() as s:
        row = await s.get(WebhookDelivery, delivery_id, with_for_update=True)
        if row is not None and row.status == "queued":
            row.status = "failed"
        return row
