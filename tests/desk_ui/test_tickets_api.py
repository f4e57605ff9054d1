"""Ticket endpoints the desk pages use: filters, assignee / team / priority changes, new tickets without a
conversation, merging duplicates, SLA clocks in business time."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from scrm.db.models import AuditLog, Contact, Ticket, utcnow
from scrm.db.models_desk import ConversationStats, SlaPolicy, Team, TicketComment
from scrm.services.tickets import queries as ticket_queries
from tests.conftest import api_message, login, make_agent, make_inbox, post_signed


async def _conversation(client, ctx, n: int = 1, sender: str = "u1") -> int:
    inbox = await make_inbox(ctx, name=f"API {n}")
    r = await post_signed(client, inbox.id, api_message(f"m-{n}", sender=sender, text="订单没到", name="张三"))
    return (await r.json())["results"][0]["conversation_id"]


async def test_change_assignee_team_priority_and_filter_the_list(client, ctx, admin_headers):
    li = await make_agent(ctx, "li", "agent")
    cid = await _conversation(client, ctx)
    async with ctx.db.transaction() as s:
        team = Team(name="售后")
        s.add(team)
    t1 = await (await client.post(f"/api/v1/conversations/{cid}/tickets", json={"subject": "少发货"}, headers=admin_headers)).json()
    t2 = await (await client.post(f"/api/v1/conversations/{cid}/tickets", json={"subject": "发票"}, headers=admin_headers)).json()
    r = await client.patch(f"/api/v1/tickets/{t1['id']}", json={"assignee_id": li, "team_id": team.id, "priority": "urgent"},
                           headers=admin_headers)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert (body["assignee_id"], body["team_id"], body["priority"]) == (li, team.id, "urgent")

    async def ids(query: str) -> list[int]:
        resp = await client.get(f"/api/v1/tickets?{query}", headers=admin_headers)
        assert resp.status == 200, await resp.text()
        return [t["id"] for t in (await resp.json())["items"]]

    assert await ids(f"assignee={li}") == [t1["id"]]
    assert await ids("priority=urgent,high") == [t1["id"]]
    assert await ids(f"team_id={team.id}") == [t1["id"]]
    assert await ids("q=发票") == [t2["id"]]
    assert await ids(f"q=%23{t2['number']}") == [t2["id"]]
    assert await ids("status=active") == [t2["id"], t1["id"]]
    assert await ids("assignee=none") == []  # the agent who opens a ticket from a conversation gets it
    items = (await (await client.get("/api/v1/tickets", headers=admin_headers)).json())["items"]
    assert {i["team_name"] for i in items} == {"售后", None} and items[1]["assignee_name"] == "Li"
    bad = await client.get("/api/v1/tickets?status=bogus", headers=admin_headers)
    assert bad.status == 400 and "status must be one of" in (await bad.json())["error"]["message"]
    # Wrong values are refused with a clear message.
    r = await client.patch(f"/api/v1/tickets/{t1['id']}", json={"team_id": 999}, headers=admin_headers)
    assert r.status == 400 and (await r.json())["error"]["code"] == "bad_team"
    r = await client.patch(f"/api/v1/tickets/{t1['id']}", json={"priority": None}, headers=admin_headers)
    assert r.status == 400
    async with ctx.db.session() as s:
        audit = (await s.scalars(select(AuditLog).where(AuditLog.action == "ticket.update"))).one()
    assert audit.data["before"]["priority"] == "normal" and audit.data["after"]["priority"] == "urgent"


async def test_new_ticket_without_a_conversation_and_merge_of_a_duplicate(client, ctx, admin_headers):
    cid = await _conversation(client, ctx)
    async with ctx.db.session() as s:
        contact = (await s.scalars(select(Contact))).one()
    a = await (await client.post(f"/api/v1/conversations/{cid}/tickets", json={"subject": "退款"}, headers=admin_headers)).json()
    r = await client.post("/api/v1/tickets", json={"subject": "电话来电：退款", "contact_id": contact.id, "description": "客户致电"},
                          headers=admin_headers)
    assert r.status == 201, await r.text()
    b = await r.json()
    assert b["conversation_id"] is None
    assert (await client.post(f"/api/v1/desk/tickets/{b['id']}/comments", json={"text": "电话记录"}, headers=admin_headers)).status == 201
    detail = await (await client.get(f"/api/v1/tickets/{a['id']}", headers=admin_headers)).json()
    assert [d["id"] for d in detail["duplicates"]] == [b["id"]] and detail["contact"]["name"] == "张三"
    r = await client.post(f"/api/v1/tickets/{b['id']}/merge", json={"into_id": a["id"]}, headers=admin_headers)
    assert r.status == 200, await r.text()
    async with ctx.db.session() as s:
        merged = await s.get(Ticket, b["id"])
        comments = (await s.scalars(select(TicketComment.text).where(TicketComment.ticket_id == a["id"]))).all()
    assert merged.status == "closed" and merged.merged_into_id == a["id"]
    assert "电话记录" in comments and any("Merged ticket" in c for c in comments)
    listed = [t["id"] for t in (await (await client.get("/api/v1/tickets", headers=admin_headers)).json())["items"]]
    assert listed == [a["id"]]  # a merged duplicate leaves the list
    again = await client.post(f"/api/v1/tickets/{b['id']}/merge", json={"into_id": a["id"]}, headers=admin_headers)
    assert again.status == 409
    self_merge = await client.post(f"/api/v1/tickets/{a['id']}/merge", json={"into_id": a["id"]}, headers=admin_headers)
    assert self_merge.status == 400
    r = await client.post("/api/v1/tickets", json={"subject": "x", "contact_id": 99999}, headers=admin_headers)
    assert r.status == 400 and (await r.json())["error"]["code"] == "bad_contact"


async def test_other_contacts_tickets_are_not_merged(client, ctx, admin_headers):
    c1 = await _conversation(client, ctx, 1, "u1")
    c2 = await _conversation(client, ctx, 2, "u2")
    a = await (await client.post(f"/api/v1/conversations/{c1}/tickets", json={}, headers=admin_headers)).json()
    b = await (await client.post(f"/api/v1/conversations/{c2}/tickets", json={}, headers=admin_headers)).json()
    r = await client.post(f"/api/v1/tickets/{b['id']}/merge", json={"into_id": a["id"]}, headers=admin_headers)
    assert r.status == 409 and (await r.json())["error"]["code"] == "other_contact"


async def test_sla_clocks_count_business_minutes(client, ctx, admin_headers):
    cid = await _conversation(client, ctx)
    t = await (await client.post(f"/api/v1/conversations/{cid}/tickets", json={}, headers=admin_headers)).json()
    await ctx.bus.drain(3)  # the desk listener has written the conversation's stats row by now
    now = utcnow()
    async with ctx.db.transaction() as s:
        policy = SlaPolicy(name="24x7", first_response_minutes=60, business_hours=False, active=True, warn_before_minutes=5)
        s.add(policy)
        await s.flush()
        stats = await s.get(ConversationStats, cid)
        if stats is None:
            stats = ConversationStats(conversation_id=cid, inbox_id=1, priority="normal", warned=[], breached=[])
            s.add(stats)
        stats.policy_id, stats.sla_started_at = policy.id, now - timedelta(minutes=90)
        stats.first_response_due, stats.first_response_at = now - timedelta(minutes=30), None
        stats.breached = ["first_response"]
    async with ctx.db.session() as s:
        clocks = await ticket_queries.sla_clocks(s, cid, now)
    assert clocks["state"] == "breached" and clocks["clocks"][0]["business_minutes_left"] == -30.0
    detail = await (await client.get(f"/api/v1/tickets/{t['id']}", headers=admin_headers)).json()
    assert detail["sla"]["policy"]["name"] == "24x7" and detail["sla"]["clocks"][0]["breached"]
    breached = await (await client.get("/api/v1/tickets?sla=breached", headers=admin_headers)).json()
    assert [x["id"] for x in breached["items"]] == [t["id"]] and breached["items"][0]["sla"]["state"] == "breached"


async def test_marketers_cannot_touch_tickets(client, ctx):
    await make_agent(ctx, "mkt", "marketer")
    headers = await login(client, "mkt", "password-123")
    assert (await client.patch("/api/v1/tickets/1", json={"priority": "low"}, headers=headers)).status == 403
    assert (await client.post("/api/v1/tickets/1/merge", json={"into_id": 2}, headers=headers)).status == 403


async def test_ticket_search_and_paging_find_the_same_tickets_whatever_index_answers(client, ctx, admin_headers,
                                                                                    monkeypatch):
    """Subject search is a case-insensitive substring on both backends (CJK terms of one or two characters
    and mixed terms too), and paging an agent's active tickets returns each once, newest first."""
    li = await make_agent(ctx, "li2", "agent")
    cid = await _conversation(client, ctx)
    subjects = ["订单 12345 物流问题", "订订单", "Invoice 发票 missing", "退款", "订单12345", "100% 退款_x"]
    made = []
    for subject in subjects:
        made.append(await (await client.post(f"/api/v1/conversations/{cid}/tickets", json={"subject": subject},
                                              headers=admin_headers)).json())
    for t in made[:5]:
        r = await client.patch(f"/api/v1/tickets/{t['id']}", json={"assignee_id": li}, headers=admin_headers)
        assert r.status == 200, await r.text()

    async def ids(query: str) -> list[int]:
        resp = await client.get(f"/api/v1/tickets?{query}", headers=admin_headers)
        assert resp.status == 200, await resp.text()
        return [t["id"] for t in (await resp.json())["items"]]

    by = {s: t["id"] for s, t in zip(subjects, made, strict=True)}
    assert await ids("q=发票") == [by["Invoice 发票 missing"]]
    assert await ids("q=invoice 发") == [by["Invoice 发票 missing"]]  # case folded, mixed scripts
    assert await ids("q=订单") == [by["订单12345"], by["订订单"], by["订单 12345 物流问题"]]
    assert await ids("q=订单 12") == [by["订单 12345 物流问题"]]  # the space counts: "订单12345" has none
    assert await ids("q=退") == [by["100% 退款_x"], by["退款"]]
    assert await ids("q=100%25 退") == [by["100% 退款_x"]]  # % and _ are text, not wildcards
    assert await ids("q=款_") == [by["100% 退款_x"]]
    assert await ids("q=单 1") == [by["订单 12345 物流问题"]]
    monkeypatch.setattr(ticket_queries, "TEXT_CAP", 1)  # PostgreSQL: a "common" term walks the list instead
    assert await ids("q=订单") == [by["订单12345"], by["订订单"], by["订单 12345 物流问题"]]
    assert await ids("q=发票") == [by["Invoice 发票 missing"]]
    # Paging li's active tickets two at a time: every one once, newest first.
    seen, cursor = [], None
    while True:
        page = await (await client.get(f"/api/v1/tickets?assignee={li}&status=active&limit=2"
                                       + (f"&before_id={cursor}" if cursor else ""), headers=admin_headers)).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_before_id"]
        if cursor is None:
            break
    assert seen == [t["id"] for t in reversed(made[:5])]
    assert await ids(f"assignee={li}&status=open,pending") == []  # new tickets are "new"
    assert await ids("assignee=me&status=active") == [by["100% 退款_x"]]  # the admin opened it, kept it
