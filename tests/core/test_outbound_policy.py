"""Server-side requests cannot be pointed at the server's own network (issue 19, item 1).

Real HTTP servers stand in for both sides: an "internal" endpoint on 127.0.0.1 that must never be
reached, and a "public" host on 127.0.0.2 (the only address these tests allow with
security.outbound_allow) that redirects to it. DNS rebinding is a resolver answering differently on
its second call.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy import select

from bot_flows.actions import CallHttp
from scrm.bootstrap import build_context
from scrm.context import AppContext
from scrm.db.models import Delivery, Message
from scrm.delivery.worker import OutboxWorker
from scrm.domain import InboundMessage
from scrm.outbound import OutboundPolicy
from scrm.services.bot import rounds as bot_svc
from scrm.services.conversations.ingest import ingest
from scrm.services.desk import webhooks_out
from scrm.settings import Settings, load_settings
from tests.conftest import free_port, login, make_inbox

PUBLIC_HOST = "127.0.0.2"  # stands for a host on the internet: the one address the strict settings allow


class Endpoint:
    """A small HTTP server that records every request it gets."""

    def __init__(self, host: str, answer: Any) -> None:
        self.host = host
        self.answer = answer
        self.hits: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        return await self.answer(request)  # type: ignore[no-any-return]

    async def start(self, port: int | None = None) -> Endpoint:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = port or free_port()
        await web.TCPSite(self.runner, self.host, self.port).start()
        return self

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def internal() -> AsyncIterator[Endpoint]:
    async def secret(_request: web.Request) -> web.Response:
        return web.json_response({"secret": "INTERNAL-ADMIN-PAGE"})

    server = await Endpoint("127.0.0.1", secret).start()
    yield server
    await server.stop()


@pytest.fixture
async def redirector(internal: Endpoint) -> AsyncIterator[Endpoint]:
    async def answer(request: web.Request) -> web.Response:
        if request.path == "/ok":
            return web.json_response({"public": True})
        raise web.HTTPFound(internal.url("/internal"))

    server = await Endpoint(PUBLIC_HOST, answer).start()
    yield server
    await server.stop()


def strict(settings: Settings, allow: list[str]) -> Settings:
    """The test settings with outbound_allow narrowed to `allow` (no loopback besides it)."""
    security = settings.security.model_copy(update={"outbound_allow": allow})
    return settings.model_copy(update={"security": security})


@pytest.fixture
async def strict_ctx(settings: Settings) -> AsyncIterator[AppContext]:
    context = await build_context(strict(settings, [f"{PUBLIC_HOST}/32"]))
    context.bus.consume_work()
    bot_svc.get_runtime(context).enabled = False
    yield context
    await context.bus.drain(2)
    await context.close()


def test_the_default_policy_refuses_every_private_destination() -> None:
    assert load_settings(env={}).security.outbound_allow == []
    policy = OutboundPolicy()
    for address in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
                    "224.0.0.1", "100.64.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::"):
        assert policy.address_problem(address), address
    assert policy.address_problem("1.1.1.1") is None and policy.address_problem("2606:4700::1111") is None
    allowing = OutboundPolicy(["10.0.0.0/8", "crm-hooks.internal", "*.corp.example"])
    assert allowing.address_problem("10.9.9.9") is None and allowing.address_problem("192.168.0.1")
    assert allowing.host_allowed("crm-hooks.internal") and allowing.host_allowed("a.corp.example")
    assert not allowing.host_allowed("corp.example.evil")


async def test_a_flow_http_step_cannot_reach_loopback_through_a_redirect(strict_ctx, internal, redirector) -> None:
    # The "public" host itself is reachable ...
    assert await bot_svc.perform_http(strict_ctx, CallHttp("r0", "GET", redirector.url("/ok")), 5) == (200, {"public": True})
    # ... but its redirect to the internal endpoint is checked like the first hop, and refused.
    status, body = await bot_svc.perform_http(strict_ctx, CallHttp("r1", "GET", redirector.url("/go")), 5)
    assert (status, body) == (0, None)
    # And so is the internal endpoint named directly, or by another scheme.
    assert await bot_svc.perform_http(strict_ctx, CallHttp("r2", "GET", internal.url("/internal")), 5) == (0, None)
    assert await bot_svc.perform_http(strict_ctx, CallHttp("r3", "GET", "file:///etc/passwd"), 5) == (0, None)
    assert internal.hits == []


async def test_callbacks_and_webhooks_neither_follow_redirects_nor_reach_private_addresses(
        strict_ctx, internal, redirector) -> None:
    inbox = await make_inbox(strict_ctx, settings={"callback_url": redirector.url("/callback")})
    [out] = await ingest(strict_ctx, inbox, [InboundMessage("m1", "u1", "hi")])
    from tests.core.test_outbox import _queue

    [did] = await _queue(strict_ctx, inbox, ["reply"], sender="u2")
    await OutboxWorker(strict_ctx).run_until_idle()
    async with strict_ctx.db.session() as s:
        d = await s.get(Delivery, did)
        m = await s.get(Message, d.message_id)
    assert d.status == "failed" and m.delivery_error == "callback answered HTTP 302 Found"

    inbox2 = await make_inbox(strict_ctx, name="API 2", settings={"callback_url": internal.url("/callback")})
    [did2] = await _queue(strict_ctx, inbox2, ["reply"], sender="u3")
    await OutboxWorker(strict_ctx).run_until_idle()
    async with strict_ctx.db.session() as s:
        d2 = await s.get(Delivery, did2)
    assert d2.status == "failed" and "refused" in d2.last_error and "loopback" in d2.last_error

    # An outgoing desk webhook aimed at the internal endpoint, directly and through the redirect.
    for url, expected in ((internal.url("/hook"), (None, "refused: loopback address")),
                          (redirector.url("/hook"), (302, "HTTP 302"))):
        hook = webhooks_out.WebhookSubscription(id=1, url=url, secret="s" * 32, name="h", events=["*"])
        delivery = webhooks_out.WebhookDelivery(id=1, event="webhook.test", event_id="e1", payload={}, attempts=1)
        assert await webhooks_out._post(strict_ctx.http_session, delivery, hook) == expected  # noqa: SLF001
    assert internal.hits == [] and out.message_id


class FlippingResolver(AbstractResolver):
    """Answers the public address first and the loopback address after that (DNS rebinding)."""

    def __init__(self) -> None:
        self.calls = 0

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.calls += 1
        address = PUBLIC_HOST if self.calls == 1 else "127.0.0.1"
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


async def test_dns_rebinding_cannot_switch_the_checked_address(settings) -> None:
    async def public(_r: web.Request) -> web.Response:  # no keep-alive: the next request connects anew
        return web.json_response({"who": "public"}, headers={"Connection": "close"})

    async def secret(_r: web.Request) -> web.Response:
        return web.json_response({"who": "INTERNAL"})

    port = free_port()
    internal = await Endpoint("127.0.0.1", secret).start(port)
    outside = await Endpoint(PUBLIC_HOST, public).start(port)  # the same port on the other address
    context = await build_context(strict(settings, [f"{PUBLIC_HOST}/32"]))
    resolver = FlippingResolver()
    context.extras["outbound_resolver"] = resolver
    try:
        url = f"http://rebind.example:{port}/whoami"
        # Checked once and connected to exactly the checked address: no second lookup to rebind.
        assert await bot_svc.perform_http(context, CallHttp("a", "GET", url), 5) == (200, {"who": "public"})
        assert resolver.calls == 1
        # The name now resolves to loopback: refused before any connection.
        assert await bot_svc.perform_http(context, CallHttp("b", "GET", url), 5) == (0, None)
        assert resolver.calls == 2
        assert internal.hits == [] and outside.hits == ["/whoami"]
    finally:
        await context.close()
        await internal.stop()
        await outside.stop()


async def test_the_delivery_error_shows_the_status_never_the_receivers_body(ctx, callback_server) -> None:
    from tests.core.test_outbox import _queue

    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    [did] = await _queue(ctx, inbox, ["hello"])
    callback_server.fail_next = [400]  # answers {"error": "induced"}
    await OutboxWorker(ctx).run_until_idle()
    async with ctx.db.session() as s:
        d = await s.get(Delivery, did)
        m = await s.get(Message, d.message_id)
    assert m.delivery_error == "callback answered HTTP 400 Bad Request"
    assert "induced" not in (d.last_error or "") + (m.delivery_error or "")


async def test_agent_reply_attachments_come_only_from_uploaded_files(client, ctx, admin, internal) -> None:
    headers = await login(client, admin["login"], admin["password"])
    inbox = await make_inbox(ctx, "memory", name="Sim", secrets={})
    [out] = await ingest(ctx, inbox, [InboundMessage("m1", "u1", "hi")])
    path = f"/api/v1/conversations/{out.conversation_id}/messages"
    by_url = {"kind": "image", "url": internal.url("/latest/meta-data/")}
    resp = await client.post(path, json={"attachments": [by_url]}, headers=headers)
    assert resp.status == 400
    resp = await client.post(path, json={"attachments": [{"kind": "image", "storage_key": "ab/" + "0" * 32}]},
                             headers=headers)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_attachment"
    from aiohttp import FormData

    form = FormData()
    form.add_field("file", b"\x89PNG\r\n\x1a\n", filename="a.png", content_type="image/png")
    uploaded = await (await client.post("/api/v1/uploads", data=form, headers=headers)).json()
    resp = await client.post(path, json={"text": "see", "attachments": [uploaded]}, headers=headers)
    assert resp.status == 201, await resp.text()
    async with ctx.db.session() as s:
        sent = (await s.scalars(select(Message).where(Message.direction == "out"))).all()
    assert [a.get("storage_key") for m in sent for a in m.attachments] == [uploaded["storage_key"]]
    assert internal.hits == []
