"""Inbox text search: substring, case-insensitive, Chinese; newest first with cursor paging; tab filters.

On PostgreSQL each test runs under every search strategy (ordered walk, trigram lookup, and the fallbacks
between them) by forcing the planner's choice and shrinking its budgets, so small data covers every path.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scrm.db.models import Contact, ContactIdentity, Conversation, ConversationLabel, Message
from scrm.services.conversations import search
from tests.conftest import make_inbox

BASE = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)

# (contact name, email, phone, status, messages); conversation i is i minutes newer than BASE.
CONVERSATIONS: list[tuple[str, str | None, str | None, str, list[str]]] = [
    ("王小明", "wang@example.com", "+86 138 0000 1111", "open", ["请问物流到哪里了？"]),
    ("Alice Smith", "alice@shop.test", None, "open", ["ORDER 12345 has shipped", "thanks"]),
    ("Bob", None, None, "open", ["order 99 and 12345 separately"]),
    ("李雷", None, None, "open", ["打折50%优惠"]),
    ("韩梅梅", None, None, "resolved", ["价格500元", "物流很快"]),
    *[(f"客户{i}", None, None, "open" if i % 2 else "pending", [f"物流查询 {i}", "好的"]) for i in range(5, 10)],
]

STRATEGIES = ["auto", "walk", "walk_then_scan", "trigram", "trigram_overflow", "walk_then_trigram", "walk_then_walk"]


@pytest.fixture(params=STRATEGIES)
def strategy(request: Any, monkeypatch: pytest.MonkeyPatch, backend: str) -> str:
    name = request.param
    if backend != "postgresql" and name != "auto":
        pytest.skip("SQLite has one plain LIKE search")
    real = search.plan_for
    rare = {"messages.text": [("unrelated sample", 1.0)]}
    if name in ("walk", "walk_then_scan"):
        monkeypatch.setattr(search, "plan_for", lambda term, samples, *has: search.Plan(None, True))
        if name == "walk_then_scan":
            monkeypatch.setattr(search, "WALK_BUDGET", 2)
    elif name in ("trigram", "trigram_overflow"):
        monkeypatch.setattr(search, "plan_for", lambda term, samples, *has: real(term, rare, True, True))
        if name == "trigram_overflow":
            monkeypatch.setattr(search, "TRIGRAM_CAP", 0)
    elif name.startswith("walk_then"):
        monkeypatch.setattr(search, "plan_for",
                            lambda term, samples, *has: dataclasses.replace(real(term, rare, True, True), common=True))
        monkeypatch.setattr(search, "WALK_BUDGET", 2)
        monkeypatch.setattr(search, "WALK_ON_SHARE", 1.0 if name == "walk_then_trigram" else 0.0)
    return name


async def _seed(ctx: Any, admin_id: int) -> list[int]:
    inbox = await make_inbox(ctx)
    other = await make_inbox(ctx, name="API 2")
    ids = []
    async with ctx.db.transaction() as s:
        for i, (name, email, phone, status, texts) in enumerate(CONVERSATIONS):
            at = BASE + timedelta(minutes=i)
            box = other if i == 9 else inbox
            contact = Contact(name=name, email=email, phone=phone, attributes={}, opt_outs={})
            s.add(contact)
            await s.flush()
            identity = ContactIdentity(inbox_id=box.id, external_id=f"search-{i}", contact_id=contact.id, attributes={})
            s.add(identity)
            await s.flush()
            conv = Conversation(inbox_id=box.id, contact_id=contact.id, identity_id=identity.id, status=status,
                                handler="human", assignee_id=admin_id if i == 1 else None, last_activity_at=at,
                                created_at=at, bot_state={}, meta={})
            s.add(conv)
            await s.flush()
            for k, text in enumerate(texts):
                s.add(Message(conversation_id=conv.id, inbox_id=box.id, direction="in", sender_kind="contact",
                              content_type="text", text=text, attachments=[], payload={}, edit_history=[],
                              private=False, created_at=at - timedelta(seconds=10 - k)))
            ids.append(conv.id)
        s.add(ConversationLabel(conversation_id=ids[3], label="vip"))
    return ids


async def _ids(client: Any, query: str) -> list[int]:
    r = await client.get(f"/api/v1/conversations?{query}")
    assert r.status == 200, await r.text()
    return [c["id"] for c in (await r.json())["items"]]


def _q(term: str) -> str:
    from urllib.parse import quote

    return "q=" + quote(term)


async def test_search_matches_substrings_of_text_and_contact(client, ctx, admin, admin_headers, strategy):
    c = await _seed(ctx, admin["id"])
    # Chinese has no spaces: a run is matched inside; default tab is open conversations, newest first.
    assert await _ids(client, _q("物流")) == [c[9], c[7], c[5], c[0]]
    assert await _ids(client, _q("流到哪")) == [c[0]]
    # One or two CJK characters (no trigram inside): through the spaced-out index on PostgreSQL.
    assert await _ids(client, _q("了？")) == [c[0]]
    assert await _ids(client, _q("50%优")) == [c[3]]
    assert await _ids(client, _q("王")) == [c[0]]
    assert await _ids(client, _q("五")) == []
    # Case-insensitive; a phrase matches as a whole, not as its separate words.
    assert await _ids(client, _q("Order")) == [c[2], c[1]]
    assert await _ids(client, _q("order 12345")) == [c[1]]
    assert await _ids(client, _q("Order 12345")) == [c[1]]
    assert await _ids(client, _q("12345 has")) == [c[1]]
    # Contact name, email and phone, as substrings.
    assert await _ids(client, _q("王小")) == [c[0]]
    assert await _ids(client, _q("WANG@example")) == [c[0]]
    assert await _ids(client, _q("138 0000")) == [c[0]]
    assert await _ids(client, _q("smith")) == [c[1]]
    # LIKE wildcards typed by the agent are literal characters.
    assert await _ids(client, _q("50%")) == [c[3]]
    assert await _ids(client, _q("5_0")) == []
    assert await _ids(client, _q("没有这个词")) == []


async def test_search_combines_with_tabs_filters_and_cursor(client, ctx, admin, admin_headers, strategy):
    c = await _seed(ctx, admin["id"])
    assert await _ids(client, _q("物流") + "&status=all") == [c[9], c[8], c[7], c[6], c[5], c[4], c[0]]
    assert await _ids(client, _q("物流") + "&status=resolved") == [c[4]]
    assert await _ids(client, _q("物流") + "&status=pending") == [c[8], c[6]]
    assert await _ids(client, _q("order") + "&tab=mine") == [c[1]]
    assert await _ids(client, _q("order") + "&tab=unassigned") == [c[2]]
    assert await _ids(client, _q("50") + "&label=vip&status=all") == [c[3]]
    assert await _ids(client, _q("物流") + "&inbox_id=999999") == []

    seen: list[int] = []
    cursor = ""
    for _ in range(10):
        r = await client.get(f"/api/v1/conversations?{_q('物流')}&status=all&limit=2{cursor}")
        page = await r.json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [c[9], c[8], c[7], c[6], c[5], c[4], c[0]]


def test_plan_prefers_the_rarest_word_and_walks_common_or_short_terms():
    samples = {"messages.text": [("message about order 1", 0.5), ("order 2，物流到哪里了", 0.5)],
               "contacts.name": [("customer 1", 1.0)]}
    assert search.plan_for("order 350003", samples, True) == search.Plan("350003", False)
    assert search.plan_for("about order", samples, True) == search.Plan("about order", True)
    assert search.plan_for("ORDER 350003", samples, True) == search.Plan("350003", False)
    assert search.plan_for("About Order", samples, True) == search.Plan("About Order", True)
    assert search.plan_for("Customer", samples, True).common  # common in contact names
    assert search.plan_for("物流", samples, True) == search.Plan(None, True)  # 2 characters: no trigram
    assert search.plan_for("物流", samples, True, True) == search.Plan("物流", True, spaced=True)
    assert search.plan_for("王五", samples, True, True) == search.Plan("王五", False, spaced=True)
    assert search.plan_for("ab", samples, True, True) == search.Plan(None, True)  # short ASCII: walk only
    assert search.spaced("王五a 1") == " 王  五 a 1"
    assert search.plan_for("order 350003", samples, False) == search.Plan(None, True)  # no pg_trgm index
    assert search.plan_for("order 350003", {}, True).common  # never analyzed: walk first, bounded
