"""Authentication, CSRF, login rate limit, API tokens and a role check on every endpoint."""

from __future__ import annotations

import re

import pytest

from scrm.web.routing import ADMIN, API_ROUTES, SUPPORT
from tests.conftest import login, make_agent


def _concrete(path: str) -> str:
    return re.sub(r"{\w+}", "1", "/api/v1" + path)


def _routes():
    # Importing the routing and API modules registers every route in API_ROUTES.
    from scrm.web import api_agents, api_contacts, api_conversations, api_inboxes, routing  # noqa: F401

    routes = {(r.method, r.path): r for r in API_ROUTES if r.roles is not None}
    # logout last: it ends the session the loop is using (so does signing out everywhere)
    return sorted(routes.values(), key=lambda r: r.path in ("/auth/logout", "/auth/logout-all"))


async def test_every_protected_endpoint_needs_authentication(client):
    for route in _routes():
        resp = await client.request(route.method, _concrete(route.path), json={})
        assert resp.status == 401, f"{route.method} {route.path} answered {resp.status}"
        assert (await resp.json())["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("role", ["agent", "marketer"])
async def test_roles_are_checked_on_every_endpoint(client, ctx, role):
    await make_agent(ctx, f"{role}1", role)
    headers = await login(client, f"{role}1", "password-123")
    for route in _routes():
        resp = await client.request(route.method, _concrete(route.path), json={}, headers=headers)
        if role not in route.roles:
            assert resp.status == 403, f"{role} got {resp.status} on {route.method} {route.path}"
        else:
            assert resp.status != 403 or (await resp.json())["error"]["code"] != "forbidden", route.path


async def test_admin_only_and_support_sets_are_used():
    paths = {(r.method, r.path): r.roles for r in _routes()}
    assert paths[("POST", "/inboxes")] == ADMIN
    assert paths[("POST", "/agents")] == ADMIN
    assert paths[("POST", "/conversations/{id}/messages")] == SUPPORT


async def test_login_sets_httponly_samesite_cookie_and_wrong_password_fails(client, admin):
    resp = await client.post("/api/v1/auth/login", json={"login": "root", "password": "nope-nope"})
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "bad_credentials"
    resp = await client.post("/api/v1/auth/login", json={"login": "root", "password": admin["password"]})
    assert resp.status == 200
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    me = await client.get("/api/v1/me")
    assert (await me.json())["agent"]["login"] == "root"


async def test_password_is_stored_as_argon2_hash(ctx, admin):
    from scrm.db.models import Agent

    async with ctx.db.session() as s:
        agent = await s.get(Agent, admin["id"])
    assert agent.password_hash.startswith("$argon2id$") and admin["password"] not in agent.password_hash


async def test_login_attempts_are_rate_limited(client, admin):
    for _ in range(5):
        r = await client.post("/api/v1/auth/login", json={"login": "root", "password": "wrong-pass"})
        assert r.status == 401
    r = await client.post("/api/v1/auth/login", json={"login": "root", "password": admin["password"]})
    assert r.status == 429 and (await r.json())["error"]["code"] == "rate_limited"


async def test_cookie_writes_need_the_csrf_token(client, admin):
    headers = await login(client, "root", admin["password"])
    body = {"name": "x", "channel_type": "api", "settings": {}, "secrets": {}}
    r = await client.post("/api/v1/inboxes", json=body)
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf"
    r = await client.post("/api/v1/inboxes", json=body, headers={"X-CSRF-Token": "forged"})
    assert r.status == 403
    r = await client.post("/api/v1/inboxes", json=body, headers=headers)
    assert r.status == 201


async def test_bearer_token_works_without_csrf_and_can_be_revoked(client, admin):
    headers = await login(client, "root", admin["password"])
    r = await client.post("/api/v1/tokens", json={"name": "ci"}, headers=headers)
    token = (await r.json())["token"]
    assert token.startswith("scrm_pat_")
    client.session.cookie_jar.clear()
    bearer = {"Authorization": f"Bearer {token}"}
    r = await client.post("/api/v1/inboxes", json={"name": "y", "channel_type": "api"}, headers=bearer)
    assert r.status == 201
    tid = (await (await client.get("/api/v1/tokens", headers=bearer)).json())["items"][0]["id"]
    assert (await client.delete(f"/api/v1/tokens/{tid}", headers=bearer)).status == 200
    r = await client.get("/api/v1/me", headers=bearer)
    assert r.status == 401 and (await r.json())["error"]["code"] == "bad_token"


async def test_logout_ends_the_session(client, admin):
    headers = await login(client, "root", admin["password"])
    assert (await client.post("/api/v1/auth/logout", headers=headers)).status == 200
    assert (await client.get("/api/v1/me")).status == 401


async def test_deactivated_agent_cannot_use_the_api(client, ctx, admin):
    aid = await make_agent(ctx, "leaver", "agent")
    await login(client, "leaver", "password-123")
    client.session.cookie_jar.clear()
    headers = await login(client, "root", admin["password"])
    r = await client.patch(f"/api/v1/agents/{aid}", json={"active": False}, headers=headers)
    assert r.status == 200
    client.session.cookie_jar.clear()
    r = await client.post("/api/v1/auth/login", json={"login": "leaver", "password": "password-123"})
    assert r.status == 401


async def test_inbox_creation_validates_channel_settings(client, admin_headers):
    r = await client.post("/api/v1/inboxes", json={"name": "t", "channel_type": "carrier-pigeon"}, headers=admin_headers)
    assert r.status == 400 and "unknown channel_type" in (await r.json())["error"]["message"]
    r = await client.post("/api/v1/inboxes", json={"name": "t", "channel_type": "api", "settings": {"callback_url": 5}},
                          headers=admin_headers)
    assert r.status == 400 and "settings.callback_url" in (await r.json())["error"]["message"]
    r = await client.post("/api/v1/inboxes", json={"name": "t", "channel_type": "api"}, headers=admin_headers)
    data = await r.json()
    assert r.status == 201 and len(data["secrets"]["secret"]) >= 32 and data["webhook_path"] == f"/webhooks/api/{data['id']}"
    listed = await (await client.get("/api/v1/inboxes", headers=admin_headers)).json()
    assert listed["items"][0]["secrets"]["secret"].startswith("••••")
