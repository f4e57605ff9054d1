"""Login under attack (atomic attempt counting, argon2 off the event loop, login CSRF) and session
revocation (admin reset / deactivation, password change, sign out everywhere), against a real server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
import pytest

from scrm.services.agents import accounts as agent_svc
from tests.conftest import REDIS_URL, login, make_agent, wait_for

LOGIN = "/api/v1/auth/login"


async def _guess(http: aiohttp.ClientSession, url: str, n: int) -> int:
    async with http.post(url, json={"login": "root", "password": f"wrong-guess-{n}"}) as r:
        return r.status


async def test_parallel_wrong_guesses_are_counted_before_the_password_check(client, admin, settings):
    limit = settings.security.login_attempts
    url = str(client.make_url(LOGIN))
    async with aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(*(_guess(http, url, n) for n in range(50)))
    # 401 = the guess reached the argon2 check; 429 = refused before it.
    assert statuses.count(401) <= limit, statuses
    assert statuses.count(429) >= 50 - limit and set(statuses) <= {401, 429}
    r = await client.post(LOGIN, json={"login": "root", "password": admin["password"]})
    assert r.status == 429  # the right password too, until the window ends


@pytest.mark.skipif(not REDIS_URL, reason="the limit is shared across processes through Redis")
async def test_login_limit_holds_across_server_processes(aiohttp_server, client, admin, settings):
    from scrm.bootstrap import build_context
    from scrm.web.app import create_app

    other_ctx = await build_context(settings)  # a second server process: own memory, same Redis
    try:
        other = await aiohttp_server(create_app(settings, ctx=other_ctx, run_background=False))
        urls = [str(client.make_url(LOGIN)), str(other.make_url(LOGIN))]
        async with aiohttp.ClientSession() as http:
            statuses = await asyncio.gather(*(_guess(http, urls[n % 2], n) for n in range(50)))
        assert statuses.count(401) <= settings.security.login_attempts, statuses
    finally:
        await other_ctx.close()


async def test_password_check_does_not_block_other_requests(client, admin, monkeypatch):
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    real_verify = agent_svc._verify

    def held_verify(stored: str | None, password: str) -> bool:
        entered.set()
        release.wait(20)  # bounded: a verify on the event loop would stall the server until then
        finished.set()
        return real_verify(stored, password)

    monkeypatch.setattr(agent_svc, "_verify", held_verify)
    logging_in = asyncio.create_task(client.post(LOGIN, json={"login": "root", "password": admin["password"]}))
    await wait_for(entered.is_set, timeout=20)
    health = await client.get("/healthz")
    served_while_hashing = not finished.is_set()
    release.set()
    resp = await logging_in
    assert health.status == 200 and resp.status == 200
    assert served_while_hashing, "another request waited for the password check"


async def test_login_needs_json(client, admin):
    body = '{"login": "root", "password": "correct-horse-1"}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = await client.post(LOGIN, data=body, headers={"Content-Type": ctype})
        assert r.status == 415 and (await r.json())["error"]["code"] == "unsupported_media_type", ctype
    assert "Set-Cookie" not in r.headers
    r = await client.post(LOGIN, data=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status == 200


async def test_login_from_another_site_is_refused(client, admin):
    creds = {"login": "root", "password": admin["password"]}
    for origin in ("https://evil.example", "null", f"http://{client.host}.evil.example:{client.port}"):
        r = await client.post(LOGIN, json=creds, headers={"Origin": origin})
        assert r.status == 403 and (await r.json())["error"]["code"] == "cross_origin", origin
        assert "Set-Cookie" not in r.headers
    r = await client.post(LOGIN, json=creds, headers={"Origin": f"http://{client.host}:{client.port}"})
    assert r.status == 200  # the desk SPA itself (same origin)
    r = await client.post(LOGIN, json=creds)
    assert r.status == 200  # API clients send no Origin


async def _agent_session(client: Any, login_name: str, password: str) -> tuple[aiohttp.ClientSession, dict[str, str]]:
    """A separate browser: its own cookie jar, logged in."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # unsafe: cookies of 127.0.0.1
    async with http.post(client.make_url(LOGIN), json={"login": login_name, "password": password}) as r:
        assert r.status == 200, await r.text()
        return http, {"X-CSRF-Token": (await r.json())["csrf_token"]}


async def _status(http: aiohttp.ClientSession, client: Any, path: str = "/api/v1/me", **kw: Any) -> int:
    async with http.get(client.make_url(path), **kw) as r:
        return r.status


async def _token(http: aiohttp.ClientSession, client: Any, headers: dict[str, str]) -> dict[str, str]:
    async with http.post(client.make_url("/api/v1/tokens"), json={"name": "cli"}, headers=headers) as r:
        return {"Authorization": "Bearer " + (await r.json())["token"]}


async def test_reset_and_deactivation_revoke_sessions_and_tokens_for_good(client, ctx, admin):
    aid = await make_agent(ctx, "amy", "agent")
    admin_headers = await login(client, "root", admin["password"])
    bare = aiohttp.ClientSession()
    try:
        # An admin resets the password: the old session and token stop working at once.
        http, headers = await _agent_session(client, "amy", "password-123")
        bearer = await _token(http, client, headers)
        assert await _status(http, client) == 200 and await _status(bare, client, headers=bearer) == 200
        r = await client.patch(f"/api/v1/agents/{aid}", json={"password": "fresh-pass-456"}, headers=admin_headers)
        assert r.status == 200
        assert await _status(http, client) == 401 and await _status(bare, client, headers=bearer) == 401
        await http.close()

        # Deactivation, then reactivation: what was revoked stays revoked.
        http, headers = await _agent_session(client, "amy", "fresh-pass-456")
        bearer = await _token(http, client, headers)
        assert (await client.patch(f"/api/v1/agents/{aid}", json={"active": False}, headers=admin_headers)).status == 200
        assert await _status(http, client) == 401 and await _status(bare, client, headers=bearer) == 401
        assert (await client.patch(f"/api/v1/agents/{aid}", json={"active": True}, headers=admin_headers)).status == 200
        assert await _status(http, client) == 401 and await _status(bare, client, headers=bearer) == 401
        await http.close()
        http, _ = await _agent_session(client, "amy", "fresh-pass-456")  # a new login works again
        assert await _status(http, client) == 200
        await http.close()
    finally:
        await bare.close()


async def test_password_change_rotates_this_session_and_ends_the_others(client, ctx, admin):
    await make_agent(ctx, "bob", "agent")
    laptop, laptop_headers = await _agent_session(client, "bob", "password-123")
    phone, _ = await _agent_session(client, "bob", "password-123")
    try:
        bearer = await _token(laptop, client, laptop_headers)
        old_cookie = laptop.cookie_jar.filter_cookies(client.make_url("/"))["scrm_session"].value
        url = client.make_url("/api/v1/me/password")
        async with laptop.post(url, json={"current_password": "not-it-000", "new_password": "new-pass-789"},
                               headers=laptop_headers) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "bad_credentials"
        async with laptop.post(url, json={"current_password": "password-123", "new_password": "short"},
                               headers=laptop_headers) as r:
            assert r.status == 400
        async with laptop.post(url, json={"current_password": "password-123", "new_password": "new-pass-789"},
                               headers=laptop_headers) as r:
            assert r.status == 200
            new_csrf = (await r.json())["csrf_token"]
        new_cookie = laptop.cookie_jar.filter_cookies(client.make_url("/"))["scrm_session"].value
        assert new_cookie != old_cookie and new_csrf != laptop_headers["X-CSRF-Token"]
        assert await _status(laptop, client) == 200  # this browser carries on, with a new session
        assert await _status(phone, client) == 401  # every other session has ended
        async with aiohttp.ClientSession() as stale:  # the cookie from before the change is worthless
            assert await _status(stale, client, headers={"Cookie": f"scrm_session={old_cookie}"}) == 401
            assert await _status(stale, client, headers=bearer) == 200  # API tokens are listed and revoked apart
            async with stale.post(client.make_url(LOGIN), json={"login": "bob", "password": "password-123"}) as r:
                assert r.status == 401
            async with stale.post(client.make_url(LOGIN), json={"login": "bob", "password": "new-pass-789"}) as r:
                assert r.status == 200
    finally:
        await laptop.close()
        await phone.close()


async def test_sign_out_everywhere(client, ctx, admin):
    await make_agent(ctx, "cat", "agent")
    laptop, headers = await _agent_session(client, "cat", "password-123")
    phone, _ = await _agent_session(client, "cat", "password-123")
    try:
        async with laptop.post(client.make_url("/api/v1/auth/logout-all"), headers=headers) as r:
            assert r.status == 200 and (await r.json())["sessions_ended"] == 2
        assert await _status(laptop, client) == 401 and await _status(phone, client) == 401
        async with laptop.post(client.make_url("/api/v1/auth/logout-all")) as r:
            assert r.status == 401
    finally:
        await laptop.close()
        await phone.close()


async def test_open_live_sockets_close_when_their_credentials_are_revoked(client, ctx, admin, monkeypatch):
    from aiohttp import WSMsgType

    from scrm.web import realtime

    monkeypatch.setattr(realtime, "SESSION_CHECK_SECONDS", 0.05)
    aid = await make_agent(ctx, "dan", "agent")
    admin_headers = await login(client, "root", admin["password"])
    browser, headers = await _agent_session(client, "dan", "password-123")
    try:
        bearer = await _token(browser, client, headers)
        url = client.make_url("/ws")
        by_cookie = await browser.ws_connect(url, headers={"Origin": f"http://{client.host}:{client.port}"})
        by_token = await client.session.ws_connect(url, headers=bearer)
        for ws in (by_cookie, by_token):
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
        assert (await client.patch(f"/api/v1/agents/{aid}", json={"active": False}, headers=admin_headers)).status == 200
        for ws in (by_cookie, by_token):
            msg = await ws.receive(timeout=5)
            while msg.type == WSMsgType.TEXT:  # events sent before the check came round
                msg = await ws.receive(timeout=5)
            assert msg.type == WSMsgType.CLOSE and msg.data == 4401
    finally:
        await browser.close()
