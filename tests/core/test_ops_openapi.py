"""Operations endpoints and the OpenAPI document matching the real routes."""

from __future__ import annotations

import re

from tests.conftest import api_message, make_inbox, post_signed


async def test_healthz_readyz_and_request_id(client):
    r = await client.get("/healthz")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    r = await client.get("/readyz", headers={"X-Request-Id": "abc123"})
    body = await r.json()
    assert r.status == 200 and body["checks"]["database"] == "ok" and r.headers["X-Request-Id"] == "abc123"


async def test_metrics_report_ingest_and_outbox(client, ctx):
    inbox = await make_inbox(ctx)
    await post_signed(client, inbox.id, api_message("metric-1"))
    text = await (await client.get("/metrics")).text()
    assert 'scrm_ingest_total{channel="api",result="message"}' in text
    assert "scrm_ingest_seconds_bucket" in text and 'scrm_outbox_depth{status="queued"}' in text


async def test_openapi_lists_exactly_the_api_routes(client):
    doc = await (await client.get("/api/v1/openapi.json")).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = set()
    for resource in client.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/v1/") and path != "/api/v1/openapi.json":
            for route in resource:
                if route.method not in ("HEAD", "*"):
                    served.add((route.method, path))
    assert documented == served
    login = doc["paths"]["/api/v1/auth/login"]["post"]
    assert login["security"] == [] and "LoginIn" in login["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    reply = doc["paths"]["/api/v1/conversations/{id}/messages"]["post"]
    assert reply["x-roles"] == ["admin", "agent"]
    assert all(re.match(r"^/api/v1/", p) for p in doc["paths"])


async def test_files_need_login(client, ctx, admin_headers):
    key = await ctx.storage.save(b"\x89PNG fake", filename="a.png", mime_type="image/png")
    r = await client.get(f"/files/{key}")
    assert r.status == 200 and r.headers["Content-Type"] == "image/png"  # logged in via admin_headers fixture
    client.session.cookie_jar.clear()
    r = await client.get(f"/files/{key}")
    assert r.status == 401
    r = await client.get("/files/../../etc/passwd")
    assert r.status in (401, 404)
