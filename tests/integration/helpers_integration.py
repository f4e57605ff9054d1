"""Shared helpers of the end-to-end channel tests: DB look-ups a person would check in the inbox."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from scrm.context import AppContext
from scrm.db.models import ContactIdentity, Conversation, Delivery, Message
from scrm.delivery.worker import OutboxWorker
from tests.conftest import wait_for


async def messages(ctx: AppContext, **where: Any) -> list[Message]:
    """Messages matching column == value filters, oldest first."""
    stmt = select(Message).order_by(Message.id)
    for name, value in where.items():
        stmt = stmt.where(getattr(Message, name) == value)
    async with ctx.db.session() as s:
        return list((await s.scalars(stmt)).all())


async def inbound(ctx: AppContext, inbox_id: int) -> list[Message]:
    return await messages(ctx, inbox_id=inbox_id, direction="in")


async def wait_inbound(ctx: AppContext, inbox_id: int, count: int = 1, timeout: float = 5.0) -> list[Message]:
    """Wait until `count` inbound messages are stored in the inbox (pollers, SMTP)."""

    async def enough() -> list[Message] | None:
        found = await inbound(ctx, inbox_id)
        return found if len(found) >= count else None

    result: list[Message] = await wait_for(enough, timeout)
    return result


async def deliveries(ctx: AppContext, **where: Any) -> list[Delivery]:
    stmt = select(Delivery).order_by(Delivery.id)
    for name, value in where.items():
        stmt = stmt.where(getattr(Delivery, name) == value)
    async with ctx.db.session() as s:
        return list((await s.scalars(stmt)).all())


async def conversations(ctx: AppContext, inbox_id: int) -> list[Conversation]:
    async with ctx.db.session() as s:
        return list((await s.scalars(select(Conversation).where(Conversation.inbox_id == inbox_id)
                                     .order_by(Conversation.id))).all())


async def identity(ctx: AppContext, inbox_id: int, external_id: str) -> ContactIdentity:
    async with ctx.db.session() as s:
        found = await s.scalar(select(ContactIdentity).where(ContactIdentity.inbox_id == inbox_id,
                                                             ContactIdentity.external_id == external_id))
    assert found is not None, f"no identity {external_id} in inbox {inbox_id}"
    return found


async def take_over(client: Any, headers: dict[str, str], conversation_id: int) -> None:
    """The agent takes the conversation, so the FAQ bot does not answer the customer's next messages."""
    resp = await client.post(f"/api/v1/conversations/{conversation_id}/handler", json={"handler": "human"},
                             headers=headers)
    assert resp.status == 200, await resp.text()


async def agent_reply(client: Any, headers: dict[str, str], conversation_id: int, text: str,
                      expect: int = 201) -> dict[str, Any]:
    """POST a reply the way the inbox page does; returns the JSON answer."""
    resp = await client.post(f"/api/v1/conversations/{conversation_id}/messages", json={"text": text},
                             headers=headers)
    body: dict[str, Any] = await resp.json()
    assert resp.status == expect, body
    return body


async def drop_bot_answers(ctx: AppContext, conversation_id: int) -> None:
    """Cancel the FAQ bot's queued answers: tests look at the agent's reply, and the per-chat rate
    limit (1/s on Telegram) would otherwise make every test wait for the bot's messages first."""
    await ctx.bus.drain(5)
    async with ctx.db.transaction() as s:
        await s.execute(update(Delivery).where(Delivery.conversation_id == conversation_id,
                                               Delivery.status == "queued").values(status="cancelled"))


async def deliver_all(ctx: AppContext) -> int:
    """Let listeners enqueue what they will, then run one burst of the outbox worker."""
    await ctx.bus.drain(5)
    worker = OutboxWorker(ctx, name="test-worker")
    try:
        return await worker.run_until_idle(timeout=20)
    finally:
        await worker.shutdown(timeout=5)
