"""Report sections for unanswered bot questions and broadcasts, checked against the rows the test creates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from scrm.context import AppContext
from scrm.db.models import Contact, Delivery, Inbox, UnansweredQuestion
from scrm.db.models_marketing import Broadcast, BroadcastRecipient
from scrm.services.desk import reports

START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2025, 4, 1, tzinfo=UTC)


async def test_top_unanswered_groups_are_ranked_by_size(ctx: AppContext) -> None:
    texts = ["可以用花呗分期付款吗", "能用花呗分期付款吗", "花呗分期付款可以吗", "你们老板是谁", "发票抬头写错了怎么办",
             "发票抬头写错了能改吗"]
    async with ctx.db.transaction() as s:
        s.add_all(UnansweredQuestion(text=t, created_at=START + timedelta(days=i)) for i, t in enumerate(texts))
        s.add(UnansweredQuestion(text="花呗分期付款行吗", created_at=START - timedelta(days=1)))  # outside the range
    async with ctx.db.session() as s:
        top = await reports.unanswered_top(s, START, END)
    assert [g["count"] for g in top] == [3, 2, 1]
    assert set(top[0]["texts"]) == set(texts[:3]) and top[2]["example"] == "你们老板是谁"


async def test_broadcast_summary_counts_match_recipients_and_deliveries(ctx: AppContext) -> None:
    async with ctx.db.transaction() as s:
        inbox = Inbox(name="API", channel_type="api", settings={}, secrets={"secret": "s" * 32})
        s.add(inbox)
        await s.flush()
        contacts = [Contact(name=f"c{i}", attributes={}, opt_outs={}) for i in range(6)]
        s.add_all(contacts)
        bc = Broadcast(name="双十一", template="hi {{name}}", status="completed", started_at=START + timedelta(days=2),
                       inbox_ids=[inbox.id], rules={})
        old = Broadcast(name="old", template="x", status="completed", started_at=START - timedelta(days=5),
                        inbox_ids=[inbox.id], rules={})
        s.add_all([bc, old])
        await s.flush()
        outcomes = ["sent", "delivered", "failed", None, "sent", None]  # None: skipped
        for c, status in zip(contacts, outcomes, strict=True):
            delivery_id = None
            if status:
                d = Delivery(idempotency_key=uuid.uuid4().hex, inbox_id=inbox.id, recipient_id=f"r{c.id}",
                             ordering_key=f"b:{c.id}", kind="broadcast", status=status, payload={})
                s.add(d)
                await s.flush()
                delivery_id = d.id
            s.add(BroadcastRecipient(
                broadcast_id=bc.id, contact_id=c.id, inbox_id=inbox.id, delivery_id=delivery_id,
                status="queued" if status else "skipped", reason=None if status else "opted_out",
                replied_at=START + timedelta(days=3) if c is contacts[0] else None,
                opted_out_at=START + timedelta(days=3) if c is contacts[4] else None))
        s.add(BroadcastRecipient(broadcast_id=old.id, contact_id=contacts[0].id, status="skipped"))
    async with ctx.db.session() as s:
        [summary] = await reports.broadcast_summaries(s, START, END)
    assert summary["name"] == "双十一"
    assert (summary["targeted"], summary["skipped"], summary["sent"], summary["delivered"], summary["failed"]) == (6, 2, 3, 1, 1)
    assert (summary["replied"], summary["opted_out"]) == (1, 1)
