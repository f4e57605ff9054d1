"""Channel secrets at rest: encrypted in the database row, masked in the API, rotated to a new key,
plaintext rows from before sealed at start, and no start on PostgreSQL without a key."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from scrm import secret_box
from scrm.db.models import Inbox
from scrm.db.models_desk import WebhookSubscription
from scrm.db.reseal import seal_stored_secrets
from scrm.settings import SettingsError, load_settings
from tests.conftest import TEST_SECRET_KEY, api_message, post_signed

ROOT = Path(__file__).resolve().parents[2]


async def _raw(ctx: Any, sql: str, **params: Any) -> Any:
    async with ctx.db.session() as s:
        return (await s.execute(text(sql), params)).scalar_one()


def _as_dict(raw: Any) -> dict[str, Any]:
    return json.loads(raw) if isinstance(raw, str) else raw


@pytest.fixture
def restore_key() -> Iterator[None]:
    yield
    secret_box.install(TEST_SECRET_KEY)  # other tests in this process read with the test key


async def test_secrets_are_encrypted_in_the_row_and_masked_in_the_api(client, ctx, admin_headers):
    aes = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg"
    given = {"app_secret": "wx-app-secret-plain-0001", "token": "wechat-callback-token", "encoding_aes_key": aes}
    r = await client.post("/api/v1/inboxes", headers=admin_headers,
                          json={"name": "公众号", "channel_type": "wechat_oa", "settings": {"app_id": "wx1"}, "secrets": given})
    created = await r.json()
    assert r.status == 201 and created["secrets"] == given  # shown once, in the answer to the creation
    raw = _as_dict(await _raw(ctx, "SELECT secrets FROM inboxes WHERE id = :id", id=created["id"]))
    assert set(raw) == set(given) and all(v.startswith("enc:v1:") for v in raw.values())
    assert not any(v in json.dumps(raw) for v in given.values())

    one = await (await client.get(f"/api/v1/inboxes/{created['id']}", headers=admin_headers)).json()
    listed = await (await client.get("/api/v1/inboxes", headers=admin_headers)).json()
    for shown in (one["secrets"], listed["items"][0]["secrets"]):
        assert shown == {"app_secret": "••••0001", "token": "••••oken", "encoding_aes_key": "••••defg"}
    # A form that sends the masked value back keeps the stored secret; a new value replaces it.
    r = await client.patch(f"/api/v1/inboxes/{created['id']}", headers=admin_headers,
                           json={"secrets": {"app_secret": "••••0001", "token": "wechat-token-new"}})
    assert r.status == 200 and "wechat-token-new" not in await r.text()
    async with ctx.db.session() as s:
        stored = (await s.get(Inbox, created["id"])).secrets
    assert stored == given | {"token": "wechat-token-new"}


async def test_a_sealed_api_secret_still_verifies_webhooks(client, ctx, admin_headers):
    r = await client.post("/api/v1/inboxes", json={"name": "API", "channel_type": "api"}, headers=admin_headers)
    inbox = await r.json()
    secret = inbox["secrets"]["secret"]
    assert secret not in json.dumps(_as_dict(await _raw(ctx, "SELECT secrets FROM inboxes WHERE id = :id", id=inbox["id"])))
    assert (await post_signed(client, inbox["id"], api_message("m-1"), secret=secret)).status == 200
    assert (await post_signed(client, inbox["id"], api_message("m-2"), secret="x" * 32)).status == 401


async def test_webhook_signing_and_web_identity_secrets_are_sealed_and_never_shown_again(client, ctx, admin_headers):
    r = await client.post("/api/v1/desk/webhooks", headers=admin_headers,
                          json={"name": "CRM", "url": "https://crm.example.com/hook", "events": ["ticket.opened"]})
    hook = (await r.json())["webhook"]
    assert len(hook["secret"]) >= 32  # once, at creation
    raw = await _raw(ctx, "SELECT secret FROM desk_webhooks WHERE id = :id", id=hook["id"])
    assert raw.startswith("enc:v1:") and hook["secret"] not in raw
    listed = await (await client.get("/api/v1/desk/webhooks", headers=admin_headers)).json()
    assert "secret" not in listed["webhooks"][0] and hook["secret"] not in json.dumps(listed)
    async with ctx.db.session() as s:
        assert (await s.get(WebhookSubscription, hook["id"])).secret == hook["secret"]

    r = await client.post("/api/v1/inboxes", json={"name": "Site", "channel_type": "web"}, headers=admin_headers)
    web = await r.json()
    first = web["secrets"]["hmac_secret"]
    embed = await (await client.get(f"/api/v1/inboxes/{web['id']}/webchat", headers=admin_headers)).json()
    assert embed["hmac_secret"] == "••••" + first[-4:]
    fresh = await (await client.post(f"/api/v1/inboxes/{web['id']}/webchat/identity-secret", headers=admin_headers)).json()
    assert len(fresh["hmac_secret"]) == 64 and fresh["hmac_secret"] != first
    async with ctx.db.session() as s:
        assert (await s.get(Inbox, web["id"])).secrets["hmac_secret"] == fresh["hmac_secret"]


async def test_plaintext_rows_from_before_keep_working_and_are_sealed_at_start(client, ctx, settings, aiohttp_client):
    plain = json.dumps({"secret": "legacy-plaintext-secret-0123456789"})
    async with ctx.db.transaction() as s:
        await s.execute(text("INSERT INTO inboxes (name, channel_type, settings, secrets, reopen_policy, active, "
                             "created_at, updated_at) VALUES ('old', 'api', '{}', :secrets, 'reopen', :t, "
                             "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"secrets": plain, "t": True})
    inbox_id = await _raw(ctx, "SELECT id FROM inboxes WHERE name = 'old'")
    # Read as it is before sealing: its webhooks verify.
    assert (await post_signed(client, inbox_id, api_message("p-1"), secret="legacy-plaintext-secret-0123456789")).status == 200
    from scrm.web.app import create_app

    await aiohttp_client(create_app(settings, run_background=False))  # a server starting: seals what is plain
    raw = _as_dict(await _raw(ctx, "SELECT secrets FROM inboxes WHERE id = :id", id=inbox_id))
    assert raw["secret"].startswith("enc:v1:") and "legacy" not in raw["secret"]
    assert await seal_stored_secrets(ctx.db) == 0  # idempotent
    assert (await post_signed(client, inbox_id, api_message("p-2"), secret="legacy-plaintext-secret-0123456789")).status == 200


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
    return subprocess.run([sys.executable, "-m", "scrm.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=base | {"SCRM_LOGGING_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)} | env)


async def test_rotate_secrets_reencrypts_with_the_newest_key(client, ctx, settings, admin_headers, restore_key):
    r = await client.post("/api/v1/inboxes", json={"name": "API", "channel_type": "api"}, headers=admin_headers)
    inbox = await r.json()
    await client.post("/api/v1/desk/webhooks", headers=admin_headers,
                      json={"name": "CRM", "url": "https://crm.example.com/hook", "events": ["ticket.opened"]})
    new = secret_box.new_key()
    res = _cli("rotate-secrets", env={"SCRM_DATABASE_URL": settings.database.url,
                                      "SCRM_SECRET_KEY": f"{new},{TEST_SECRET_KEY}"})
    assert res.returncode == 0, res.stderr
    assert "re-encrypted the secrets of 2 rows" in res.stdout and inbox["secrets"]["secret"] not in res.stdout + res.stderr

    secret_box.install(new)  # the old key is dropped: everything reads with the new one alone
    async with ctx.db.session() as s:
        assert (await s.get(Inbox, inbox["id"])).secrets["secret"] == inbox["secrets"]["secret"]
    secret_box.install(TEST_SECRET_KEY)  # ... and nothing reads with the old one any more
    with pytest.raises(secret_box.SecretBoxError, match="does not decrypt"):
        async with ctx.db.session() as s:
            await s.get(Inbox, inbox["id"])


def test_no_start_on_postgresql_without_a_key():
    env = {"SCRM_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}
    for command in ("serve", "worker"):
        res = _cli(command, env=env)
        assert res.returncode == 2 and "SCRM_SECRET_KEY" in res.stderr and "Traceback" not in res.stderr, res.stderr
    res = _cli("serve", env=env | {"SCRM_SECRET_KEY": "not-a-fernet-key"})
    assert res.returncode == 2 and "Fernet key" in res.stderr and "not-a-fernet-key" not in res.stderr
    with pytest.raises(SettingsError, match="SCRM_SECRET_KEY"):
        secret_box.resolve_keys(load_settings(env=env))


def test_sqlite_and_the_demo_keep_a_generated_key_in_var(tmp_path):
    settings = load_settings(env={"SCRM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/var/scrm.db"})
    first = secret_box.resolve_keys(settings)
    key_file = tmp_path / "var" / "secret.key"
    assert key_file.read_text().strip() == first and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert secret_box.resolve_keys(settings) == first  # the next start reads the same key
    secret_box.parse_keys(first)
    pg = load_settings(env={"SCRM_DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/db"})
    demo = secret_box.resolve_keys(pg, generate_in=tmp_path / "demo-var")
    assert (tmp_path / "demo-var" / "secret.key").read_text().strip() == demo
    given = load_settings(env={"SCRM_DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/db", "SCRM_SECRET_KEY": first})
    assert secret_box.resolve_keys(given) == first and first not in repr(given)
