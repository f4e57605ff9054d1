"""Outgoing webhooks: signed deliveries, retries with backoff, a delivery log, never blocking ingest."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from scrm.context import AppContext
from scrm.db.models import utcnow
from scrm.db.models_desk import WebhookDelivery
from scrm.services.desk import webhooks_out
from tests.conftest import CallbackServer, free_port, make_inbox, wait_for
from tests.desk.conftest import say


async def _hook(client: Any, headers: dict[str, str], url: str, events: list[str]) -> dict[str, Any]:
    resp = await client.post("/api/v1/desk/webhooks", headers=headers,
                             json={"name": "ERP", "url": url, "events": events, "secret": "s" * 32})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["webhook"]


async def _deliveries(ctx: AppContext) -> list[WebhookDelivery]:
    async with ctx.db.session() as s:
        return list((await s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))).all())


async def test_signed_delivery_retry_and_log(desk: AppContext, client: Any, admin_headers: dict[str, str],
                                             callback_server: CallbackServer) -> None:
    hook = await _hook(client, admin_headers, callback_server.url, ["conversation.created", "message.created"])
    assert hook["secret"] == "s" * 32
    inbox = await make_inbox(desk)
    cid = await say(desk, inbox, "订单什么时候发货？")
    # The local receiver checks X-SCRM-Signature with the shared secret (401 otherwise).
    await wait_for(lambda: len(callback_server.received) >= 2)
    by_event = {(r["event"], r["data"].get("direction")): r for r in callback_server.received}
    assert by_event[("conversation.created", None)]["data"]["conversation_id"] == cid
    assert by_event[("message.created", "in")]["data"]["conversation_id"] == cid
    before = len(callback_server.processed)

    callback_server.fail_next = [500]
    await say(desk, inbox, "还在吗")
    failed = await wait_for(_first_with(desk, lambda d: d.attempts == 1 and d.status == "queued"))
    assert failed.response_status == 500 and failed.last_error == "HTTP 500"
    wait = failed.next_attempt_at - utcnow()
    assert timedelta(seconds=5) < wait <= timedelta(seconds=webhooks_out.BACKOFF_BASE)
    assert await webhooks_out.deliver_due(desk, now=utcnow() + timedelta(seconds=60)) >= 1
    rows = {d.id: d for d in await _deliveries(desk)}
    assert rows[failed.id].status == "delivered" and rows[failed.id].attempts == 2
    assert f"scrm-{hook['id']}-{failed.event_id}" in callback_server.processed
    assert len(callback_server.received) == len(callback_server.processed) >= before + 1  # each event once
    await wait_for(_all_delivered(desk))

    resp = await client.get(f"/api/v1/desk/webhooks/{hook['id']}/deliveries", headers=admin_headers)
    log = (await resp.json())["deliveries"]
    assert len(log) == len(callback_server.processed) and {d["status"] for d in log} == {"delivered"}
    assert {d["attempts"] for d in log} == {1, 2}
    assert "secret" not in (await (await client.get("/api/v1/desk/webhooks", headers=admin_headers)).json())["webhooks"][0]


def _all_delivered(ctx: AppContext) -> Any:
    async def check() -> bool:
        return all(d.status == "delivered" for d in await _deliveries(ctx))
    return check


def _first_with(ctx: AppContext, pred: Any) -> Any:
    async def check() -> Any:
        return next((d for d in await _deliveries(ctx) if pred(d)), None)
    return check


async def test_a_dead_endpoint_never_blocks_ingest_and_gives_up(desk: AppContext, client: Any,
                                                                 admin_headers: dict[str, str]) -> None:
    await _hook(client, admin_headers, f"http://127.0.0.1:{free_port()}/nobody-home", ["message.created"])
    inbox = await make_inbox(desk)
    t0 = time.perf_counter()
    for i in range(3):
        await say(desk, inbox, f"消息 {i}")
    assert time.perf_counter() - t0 < 3
    await wait_for(_first_with(desk, lambda d: d.attempts >= 1 and d.status == "queued"))
    for _ in range(webhooks_out.MAX_ATTEMPTS + 1):
        await webhooks_out.deliver_due(desk, now=utcnow() + timedelta(hours=2))
    rows = await _deliveries(desk)
    assert len(rows) >= 3  # the customer messages (and the bot's answers)
    assert all(d.status == "failed" and d.attempts == webhooks_out.MAX_ATTEMPTS for d in rows)
    assert all("ClientConnectorError" in (d.last_error or "") for d in rows)
    # An admin can send one again from the log.
    resp = await client.post(f"/api/v1/desk/webhooks/deliveries/{rows[0].id}/redeliver", headers=admin_headers)
    assert (await resp.json())["delivery"]["status"] == "queued"


async def test_bad_subscriptions_are_rejected(client: Any, admin_headers: dict[str, str]) -> None:
    for body, word in [
        ({"name": "x", "url": "ftp://example.com", "events": ["message.created"]}, "http"),
        ({"name": "x", "url": "https://example.com/h", "events": ["message.exploded"]}, "unknown event"),
        ({"name": "x", "url": "https://example.com/h", "events": []}, "events"),
        ({"name": "x", "url": "https://example.com/h", "events": ["*"], "retries": 3}, "retries"),
    ]:
        resp = await client.post("/api/v1/desk/webhooks", headers=admin_headers, json=body)
        assert resp.status == 400 and word in (await resp.json())["error"]["message"], body


def test_backoff_grows_and_is_capped() -> None:
    assert [webhooks_out.backoff(n) for n in (1, 2, 3)] == [10, 40, 160]
    assert webhooks_out.backoff(20) == webhooks_out.BACKOFF_MAX
