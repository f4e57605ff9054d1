"""Webhook verification, bad input and inbox configuration."""

from __future__ import annotations

import logging

import pydantic
import pytest

from channels.base import InboxConfig
from channels.registry import get_adapter_class
from channels.telegram import TelegramAdapter
from scrm.domain import WebhookError, WebhookRequest
from tests.channels.telegram.fake_bot_api import DEFAULT_TOKEN
from tests.channels.telegram.helpers import load_fixture, webhook_request
from tests.fakes import RecordingSink


async def test_registered_under_telegram() -> None:
    assert get_adapter_class("telegram") is TelegramAdapter


@pytest.mark.parametrize("secret", ["wrong-secret", "", None])
async def test_wrong_or_missing_secret_is_401_and_nothing_stored(adapter, sink: RecordingSink,
                                                                 secret: str | None) -> None:
    with pytest.raises(WebhookError) as err:
        await adapter.handle_webhook(webhook_request(load_fixture("message__text_chinese"), secret), sink)
    assert err.value.status == 401
    assert sink.batches == []


async def test_inbox_without_secret_refuses_every_webhook(make_adapter, runtime, sink) -> None:
    inbox = InboxConfig(id=8, name="t", channel_type="telegram", secrets={"bot_token": DEFAULT_TOKEN})
    adapter = TelegramAdapter(inbox, runtime)
    with pytest.raises(WebhookError) as err:
        await adapter.handle_webhook(webhook_request(load_fixture("message__text_chinese"), ""), sink)
    assert err.value.status == 401


async def test_malformed_json_is_400_and_logs_update_id(adapter, sink: RecordingSink,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(WebhookError) as err:
        await adapter.handle_webhook(webhook_request(b'{"update_id": 500123, "message": {'), sink)
    assert err.value.status == 400
    assert sink.batches == []
    assert "500123" in caplog.text


async def test_non_utf8_body_is_400(adapter, sink: RecordingSink) -> None:
    with pytest.raises(WebhookError) as err:
        await adapter.handle_webhook(webhook_request("你好".encode("gbk")), sink)
    assert err.value.status == 400


async def test_update_that_fails_to_parse_is_400_and_logs_its_id(adapter, sink: RecordingSink,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(WebhookError) as err:
        await adapter.handle_webhook(webhook_request(load_fixture("message__missing_chat")), sink)
    assert err.value.status == 400
    assert sink.batches == []
    assert "10025" in caplog.text


@pytest.mark.parametrize("body", [[1, 2], {"message": {}}, {"update_id": "12"}])
async def test_json_that_is_not_an_update_is_400(adapter, sink: RecordingSink, body: object) -> None:
    import json

    with pytest.raises(WebhookError) as err:
        await adapter.handle_webhook(webhook_request(json.dumps(body).encode()), sink)
    assert err.value.status == 400


@pytest.mark.parametrize("fixture", ["message_reaction__added", "future_update__unknown"])
async def test_unknown_update_type_is_logged_and_acknowledged(adapter, sink: RecordingSink, fixture: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    response = await adapter.handle_webhook(webhook_request(load_fixture(fixture)), sink)
    assert response.status == 200
    assert sink.items == []
    assert str(load_fixture(fixture)["update_id"]) in caplog.text


async def test_duplicate_update_is_stored_once(adapter, sink: RecordingSink) -> None:
    update = load_fixture("message__photo")
    await adapter.handle_webhook(webhook_request(update), sink)
    await adapter.handle_webhook(webhook_request(update), sink)  # Telegram retried
    assert [i.external_id for i in sink.batches[0]] == [i.external_id for i in sink.batches[1]]
    assert len(sink.stored) == 1


async def test_sink_failure_is_not_acknowledged(adapter, sink: RecordingSink) -> None:
    sink.fail_with = RuntimeError("database is down")
    with pytest.raises(RuntimeError):  # the web layer answers 500, so Telegram retries later
        await adapter.handle_webhook(webhook_request(load_fixture("message__text_chinese")), sink)


async def test_get_request_is_refused(adapter, sink: RecordingSink) -> None:
    request = WebhookRequest(method="GET", path="/webhooks/telegram/7", query={}, headers={}, body=b"")
    with pytest.raises(WebhookError) as err:
        await adapter.handle_webhook(request, sink)
    assert err.value.status == 405


def test_init_secrets_generates_a_webhook_secret_once() -> None:
    filled = TelegramAdapter.init_secrets({"bot_token": DEFAULT_TOKEN})
    assert len(filled["webhook_secret"]) >= 40
    assert set(filled["webhook_secret"]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")  # Telegram's allowed set
    assert TelegramAdapter.init_secrets(filled) == filled


def test_unknown_setting_is_rejected(runtime) -> None:
    inbox = InboxConfig(id=1, name="t", channel_type="telegram", settings={"acept_groups": True},
                        secrets={"bot_token": DEFAULT_TOKEN})
    with pytest.raises(pydantic.ValidationError):
        TelegramAdapter(inbox, runtime)


def test_malformed_token_error_does_not_echo_the_token(runtime) -> None:
    inbox = InboxConfig(id=1, name="t", channel_type="telegram", secrets={"bot_token": "not-a-valid-SECRETVALUE"})
    with pytest.raises(pydantic.ValidationError) as err:
        TelegramAdapter(inbox, runtime)
    assert "SECRETVALUE" not in str(err.value)
    assert "BotFather" in str(err.value)
