"""Agents see only their inboxes: the route table walked as an agent of another inbox.

Inbox A belongs to alice (a direct member), inbox B to bob (through a team), inbox C has no members (open to
every agent, as before membership existed). Every endpoint that takes a conversation, contact, ticket,
message or inbox id is called by bob with A's ids: each answers 403/404 and none of A's text comes back.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp import FormData

from scrm.db.models import Agent
from scrm.services.agents.accounts import create_token
from scrm.web.routes import api_routes
from tests.conftest import api_message, make_agent, make_inbox, post_signed

SECRET_TEXT = "机密订单A-7731"  # the customer's words in inbox A
SECRET_NAME = "王保密"  # the customer of inbox A
NOTE = "内部备注A-5512"

# How to fill each id-taking path (and a body that passes validation, so the membership check is what answers).
ROUTE_ARGS: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {
    ("GET", "/contacts/{id}"): ("contact", None),
    ("PATCH", "/contacts/{id}"): ("contact", {"name": "x"}),
    ("PUT", "/contacts/{id}/attributes"): ("contact", {"attributes": {}}),
    ("GET", "/contacts/{id}/timeline"): ("contact", None),
    ("PUT", "/contacts/{id}/tags"): ("contact", {"tags": ["x"]}),
    ("GET", "/contacts/{id}/wechat-subscriptions"): ("contact", None),
    ("GET", "/conversations/{id}"): ("conversation", None),
    ("GET", "/conversations/{id}/messages"): ("conversation", None),
    ("POST", "/conversations/{id}/messages"): ("conversation", {"text": "hi"}),
    ("POST", "/conversations/{id}/assign"): ("conversation", {"assignee_id": None}),
    ("POST", "/conversations/{id}/status"): ("conversation", {"status": "resolved"}),
    ("POST", "/conversations/{id}/handler"): ("conversation", {"handler": "human"}),
    ("PATCH", "/conversations/{id}"): ("conversation", {"priority": "high"}),
    ("POST", "/conversations/{id}/read"): ("conversation", None),
    ("POST", "/conversations/{id}/tickets"): ("conversation", {"subject": "x"}),
    ("POST", "/webchat/conversations/{id}/block"): ("conversation", None),
    ("POST", "/webchat/conversations/{id}/unblock"): ("conversation", None),
    ("POST", "/messages/{id}/retry"): ("message", None),
    ("GET", "/messages/{id}/html"): ("message", None),
    ("GET", "/simulator/{inbox_id}/messages"): ("inbox", None),
    ("GET", "/tickets/{id}"): ("ticket", None),
    ("PATCH", "/tickets/{id}"): ("ticket", {"priority": "high"}),
    ("POST", "/tickets/{id}/merge"): ("ticket", {"into_id": 1}),
    ("POST", "/desk/tickets/{id}/status"): ("ticket", {"status": "solved"}),
    ("GET", "/desk/tickets/{id}/comments"): ("ticket", None),
    ("POST", "/desk/tickets/{id}/comments"): ("ticket", {"text": "x"}),
}
# Id-taking paths that name nothing of an inbox (the caller's own token, FAQ entries, settings sections).
NOT_INBOX_DATA = {("DELETE", "/tokens/{id}"), ("GET", "/faq/entries/{key}"), ("GET", "/desk/settings/{section}")}


def _agent_id_routes() -> list[Any]:
    """Every agent-reachable /api/v1 route with an id in its path, as the real app registers them."""
    routes = {(r.method, r.path): r for r in api_routes() if r.roles and "agent" in r.roles and "{" in r.path}
    return sorted(routes.values(), key=lambda r: (r.path, r.method))


async def _bearer(ctx: Any, agent_id: int) -> dict[str, str]:
    async with ctx.db.transaction() as s:
        _, raw = await create_token(s, await s.get(Agent, agent_id), "test")
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture
async def world(client: Any, ctx: Any, admin: dict[str, Any], admin_headers: dict[str, str]) -> dict[str, Any]:
    """Inboxes A (alice), B (bob's team), C (no members), with a conversation, ticket, note and file in A."""
    a = await make_inbox(ctx, name="A")
    b = await make_inbox(ctx, name="B")
    c = await make_inbox(ctx, name="C")
    alice = await make_agent(ctx, "alice", "agent")
    bob = await make_agent(ctx, "bob", "agent")
    mkt = await make_agent(ctx, "mkt", "marketer")
    h = admin_headers
    r = await client.post("/api/v1/desk/teams", json={"name": "B team", "members": [bob]}, headers=h)
    assert r.status == 201, await r.text()
    team = (await r.json())["team"]["id"]
    assert (await client.put(f"/api/v1/inboxes/{a.id}/members", json={"agent_ids": [alice]}, headers=h)).status == 200
    r = await client.put(f"/api/v1/inboxes/{b.id}/members", json={"team_ids": [team]}, headers=h)
    assert r.status == 200 and (await r.json())["team_ids"] == [team]

    async def inbound(inbox: Any, mid: str, sender: str, text: str, name: str) -> int:
        r = await post_signed(client, inbox.id, api_message(mid, sender=sender, text=text, name=name))
        return (await r.json())["results"][0]["conversation_id"]

    conv_a = await inbound(a, "a-1", "cust-a", SECRET_TEXT, SECRET_NAME)
    conv_b = await inbound(b, "b-1", "cust-b", "B的问题", "李乙")
    conv_c = await inbound(c, "c-1", "cust-c", "C的问题", "赵丙")
    form = FormData()
    form.add_field("file", b"\x89PNG secret-a-image", filename="a.png", content_type="image/png")
    upload = await (await client.post("/api/v1/uploads", data=form, headers=h)).json()
    r = await client.post(f"/api/v1/conversations/{conv_a}/messages", headers=h,
                          json={"text": "附件", "attachments": [upload]})
    assert r.status == 201, await r.text()
    r = await client.post(f"/api/v1/conversations/{conv_a}/messages", json={"text": NOTE, "private": True}, headers=h)
    detail = await (await client.get(f"/api/v1/conversations/{conv_a}", headers=h)).json()
    ticket = await (await client.post(f"/api/v1/conversations/{conv_a}/tickets", json={"subject": SECRET_TEXT},
                                      headers=h)).json()
    client.session.cookie_jar.clear()  # from here on each agent speaks with their own token
    return {
        "inbox": {"A": a.id, "B": b.id, "C": c.id}, "conv": {"A": conv_a, "B": conv_b, "C": conv_c},
        "ids": {"conversation": conv_a, "contact": detail["contact"]["id"], "ticket": ticket["id"],
                "message": detail["messages"][0]["id"], "inbox": a.id},
        "file": upload["storage_key"], "team": team, "ids_of": {"alice": alice, "bob": bob, "mkt": mkt},
        "alice": await _bearer(ctx, alice), "bob": await _bearer(ctx, bob), "mkt": await _bearer(ctx, mkt),
        "admin": await _bearer(ctx, admin["id"]),
    }


def _leaks(text: str) -> list[str]:
    return [s for s in (SECRET_TEXT, SECRET_NAME, NOTE, "secret-a-image") if s in text]


async def test_every_id_endpoint_refuses_an_agent_of_another_inbox(client, world):
    walked = set()
    for route in _agent_id_routes():
        key = (route.method, route.path)
        if key in NOT_INBOX_DATA:
            continue
        assert key in ROUTE_ARGS, f"new endpoint {key}: add it to the membership walk (ROUTE_ARGS)"
        kind, body = ROUTE_ARGS[key]
        url = "/api/v1" + re.sub(r"{\w+}", str(world["ids"][kind]), route.path)
        if key == ("GET", "/simulator/{inbox_id}/messages"):
            url += "?sender=cust-a"
        resp = await client.request(route.method, url, json=body, headers=world["bob"])
        text = await resp.text()
        assert resp.status in (403, 404), f"bob got {resp.status} on {route.method} {route.path}: {text[:200]}"
        assert not _leaks(text), f"{route.method} {route.path} leaked {_leaks(text)}"
        walked.add(key)
        if route.method == "GET" and kind != "inbox":  # the member gets the same row: the walk is not vacuous
            own = await client.get(url, headers=world["alice"])
            if route.path == "/messages/{id}/html":  # an API message has no HTML version: its own 404, not ours
                assert (await own.json())["error"]["message"] == "this message has no HTML version"
            else:
                assert own.status == 200, f"alice got {own.status} on {route.path}"
    assert len(walked) >= 20
    r = await client.get(f"/api/v1/files/{world['file']}".replace("/api/v1", ""), headers=world["bob"])
    assert r.status == 404 and not _leaks(await r.text())
    assert (await client.get(f"/files/{world['file']}", headers=world["mkt"])).status == 404
    r = await client.get(f"/files/{world['file']}", headers=world["alice"])
    assert r.status == 200 and b"secret-a-image" in await r.read()


async def test_ids_in_bodies_and_queries_are_checked_too(client, world):
    bob, ids = world["bob"], world["ids"]
    r = await client.post("/api/v1/tickets", json={"subject": "x", "contact_id": ids["contact"]}, headers=bob)
    assert r.status == 404
    r = await client.post("/api/v1/conversations", headers=bob,
                          json={"contact_id": ids["contact"], "inbox_id": world["inbox"]["A"], "text": "hi"})
    assert r.status == 404
    r = await client.post("/api/v1/conversations/bulk", json={"ids": [ids["conversation"]], "action": "resolve"},
                          headers=bob)
    assert (await r.json()) == {"done": [], "failed": [{"id": ids["conversation"], "code": "not_found",
                                                         "error": "conversation not found"}]}
    r = await client.post("/api/v1/contact-merges", json={"target_id": ids["contact"], "source_id": ids["contact"]},
                          headers=bob)
    assert r.status == 404
    for url in (f"/api/v1/tickets?conversation_id={ids['conversation']}", f"/api/v1/tickets?contact_id={ids['contact']}",
                f"/api/v1/desk/rules/log?conversation_id={ids['conversation']}"):
        r = await client.get(url, headers=bob)
        assert r.status == 200 and not _leaks(await r.text()), url
    body = await (await client.get(f"/api/v1/tickets?conversation_id={ids['conversation']}", headers=bob)).json()
    assert body["items"] == []


async def test_lists_and_searches_show_only_the_agents_inboxes(client, world):
    bob, alice, conv = world["bob"], world["alice"], world["conv"]

    async def convs(headers: dict[str, str], query: str = "status=all") -> set[int]:
        data = await (await client.get(f"/api/v1/conversations?{query}", headers=headers)).json()
        return {c["id"] for c in data["items"]}

    assert await convs(bob) == {conv["B"], conv["C"]}  # C has no members: open to every agent
    assert await convs(alice) == {conv["A"], conv["C"]}
    assert await convs(world["admin"]) == set(conv.values())
    assert await convs(bob, "q=机密订单") == set()
    assert await convs(alice, "q=机密订单") == {conv["A"]}
    assert await convs(bob, f"inbox_id={world['inbox']['A']}") == set()
    counts = await (await client.get("/api/v1/conversations/counts", headers=bob)).json()
    assert counts["all"] == 2
    for url in ("/api/v1/contacts", "/api/v1/contacts?q=王", "/api/v1/tickets", "/api/v1/inboxes",
                "/api/v1/desk/reports", "/api/v1/desk/csat", "/api/v1/faq/unanswered", "/api/v1/contact-merges/suggestions",
                f"/api/v1/desk/sla/conversations?ids={conv['A']}"):
        r = await client.get(url, headers=bob)
        assert r.status == 200 and not _leaks(await r.text()), url
    inboxes = await (await client.get("/api/v1/inboxes", headers=bob)).json()
    assert {i["name"] for i in inboxes["items"]} == {"B", "C"}
    report = await (await client.get("/api/v1/desk/reports", headers=bob)).json()
    assert sum(r.get("opened", 0) for r in report["rows"]) == 2
    report = await (await client.get("/api/v1/desk/reports", headers=world["admin"])).json()
    assert sum(r.get("opened", 0) for r in report["rows"]) == 3
    contacts = await (await client.get("/api/v1/contacts", headers=bob)).json()
    assert {c["name"] for c in contacts["items"]} == {"李乙", "赵丙"}
    # The marketer still sees every contact (segments), but not A's conversation history.
    profile = await (await client.get(f"/api/v1/contacts/{world['ids']['contact']}", headers=world["mkt"])).json()
    assert profile["name"] == SECRET_NAME and profile["conversations"] == [] and profile["tickets"] == []


async def test_assignment_never_goes_to_an_agent_who_cannot_see_the_inbox(client, world):
    r = await client.post(f"/api/v1/conversations/{world['conv']['A']}/assign",
                          json={"assignee_id": world["ids_of"]["bob"]}, headers=world["admin"])
    assert r.status == 400 and (await r.json())["error"]["code"] == "not_inbox_member"
    r = await client.post(f"/api/v1/conversations/{world['conv']['A']}/assign",
                          json={"assignee_id": world["ids_of"]["alice"]}, headers=world["admin"])
    assert r.status == 200
    r = await client.patch(f"/api/v1/tickets/{world['ids']['ticket']}", json={"assignee_id": world["ids_of"]["bob"]},
                           headers=world["admin"])
    assert r.status == 400 and (await r.json())["error"]["code"] == "not_inbox_member"
    # Alice leaves inbox A: her open conversation there goes back to the queue.
    r = await client.put(f"/api/v1/inboxes/{world['inbox']['A']}/members", json={"team_ids": [world["team"]]},
                         headers=world["admin"])
    assert (await r.json())["unassigned_conversations"] == [world["conv"]["A"]]
    assert (await client.get(f"/api/v1/conversations/{world['conv']['A']}", headers=world["alice"])).status == 404
    assert (await client.get(f"/api/v1/conversations/{world['conv']['A']}", headers=world["bob"])).status == 200


async def test_leaving_a_member_team_or_its_deletion_requeues_the_agents_conversations(client, world):
    admin, team, bob = world["admin"], world["team"], world["ids_of"]["bob"]
    conv_b = world["conv"]["B"]
    assert (await client.post(f"/api/v1/conversations/{conv_b}/assign", json={"assignee_id": bob},
                              headers=admin)).status == 200
    # Bob is taken off the team that gives him inbox B: his open conversation there goes back to the queue.
    r = await client.put(f"/api/v1/desk/teams/{team}", json={"name": "B team", "members": []}, headers=admin)
    assert r.status == 200, await r.text()
    detail = await (await client.get(f"/api/v1/conversations/{conv_b}", headers=admin)).json()
    assert detail["assignee_id"] is None
    assert (await client.get(f"/api/v1/conversations/{conv_b}", headers=world["bob"])).status == 404
    # Back on the team, assigned again; then the team is deleted (B keeps alice as a member, so it does
    # not become open to all): requeued again.
    r = await client.put(f"/api/v1/desk/teams/{team}", json={"name": "B team", "members": [bob]}, headers=admin)
    assert r.status == 200
    r = await client.put(f"/api/v1/inboxes/{world['inbox']['B']}/members",
                         json={"team_ids": [team], "agent_ids": [world["ids_of"]["alice"]]}, headers=admin)
    assert r.status == 200
    assert (await client.post(f"/api/v1/conversations/{conv_b}/assign", json={"assignee_id": bob},
                              headers=admin)).status == 200
    assert (await client.delete(f"/api/v1/desk/teams/{team}", headers=admin)).status == 200
    detail = await (await client.get(f"/api/v1/conversations/{conv_b}", headers=admin)).json()
    assert detail["assignee_id"] is None


async def test_members_api_validates_and_empty_members_open_the_inbox(client, world):
    admin, inbox_a = world["admin"], world["inbox"]["A"]
    r = await client.put(f"/api/v1/inboxes/{inbox_a}/members", json={"agent_ids": [987654]}, headers=admin)
    assert r.status == 400 and (await r.json())["error"]["code"] == "bad_member"
    r = await client.put("/api/v1/inboxes/987654/members", json={}, headers=admin)
    assert r.status == 404
    assert (await client.get(f"/api/v1/inboxes/{inbox_a}/members", headers=world["bob"])).status == 403
    r = await client.put(f"/api/v1/inboxes/{inbox_a}/members", json={"agent_ids": [], "team_ids": []}, headers=admin)
    assert (await r.json())["open_to_all"] is True
    assert (await client.get(f"/api/v1/conversations/{world['conv']['A']}", headers=world["bob"])).status == 200


async def test_live_feed_reaches_only_agents_who_see_the_inbox(client, world):
    bob_ws = await client.ws_connect("/ws", headers=world["bob"])
    alice_ws = await client.ws_connect("/ws", headers=world["alice"])
    for ws in (bob_ws, alice_ws):
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
    await post_signed(client, world["inbox"]["A"], api_message("a-2", sender="cust-a", text=SECRET_TEXT + "2"))
    await post_signed(client, world["inbox"]["B"], api_message("b-2", sender="cust-b", text="B第二条"))

    async def created_until(ws: Any, last: str) -> list[str]:
        seen: list[str] = []
        while not seen or seen[-1] != last:
            frame = json.loads((await ws.receive(timeout=5)).data)
            if frame.get("name") == "message.created":
                seen.append(frame["data"]["message"]["text"])
        return seen

    # Frames go out in commit order: had A's message reached bob, it would come before B's.
    assert await created_until(bob_ws, "B第二条") == ["B第二条"]
    assert await created_until(alice_ws, SECRET_TEXT + "2") == [SECRET_TEXT + "2"]
    await bob_ws.close()
    await alice_ws.close()
