"""Long polling: offsets survive restarts, nothing is skipped or imported twice."""

from __future__ import annotations

import pytest

from channels.telegram.polling import OFFSET_KEY
from scrm.domain import InboundMessage
from tests.channels.telegram.fake_bot_api import FakeBotApi
from tests.channels.telegram.helpers import load_fixture, webhook_request
from tests.fakes import RecordingSink


async def test_first_poll_deletes_webhook_and_stores_batch(adapter, bot_api: FakeBotApi, runtime,
                                                           sink: RecordingSink) -> None:
    bot_api.webhook = {"url": "https://old.example.com/hook"}
    bot_api.push_update(load_fixture("message__text_chinese"))
    bot_api.push_update(load_fixture("message__photo"))
    poller = adapter.poll(sink)
    await anext(poller)
    assert [c.method for c in bot_api.calls[:2]] == ["deleteWebhook", "getUpdates"]
    assert [i.external_id for i in sink.items] == ["987654321:101", "987654321:103"]
    assert len(sink.batches) == 1  # one batch, one transaction
    assert runtime.state.values[OFFSET_KEY] == 10004
    await poller.aclose()


async def test_restart_resumes_from_saved_offset(make_adapter, bot_api: FakeBotApi, runtime,
                                                 sink: RecordingSink) -> None:
    bot_api.push_update(load_fixture("message__text_chinese"))
    first = make_adapter().poll(sink)
    await anext(first)
    await first.aclose()  # the process stops

    bot_api.push_update(load_fixture("message__text_english"))
    second = make_adapter().poll(sink)  # a new process, same durable state
    await anext(second)
    await second.aclose()
    assert bot_api.calls_of("getUpdates")[-1].params["offset"] == "10002"
    assert [i.external_id for i in sink.items] == ["987654321:101", "987654321:102"]
    assert runtime.state.values[OFFSET_KEY] == 10003


async def test_offset_not_saved_when_sink_fails(make_adapter, bot_api: FakeBotApi, runtime,
                                                sink: RecordingSink) -> None:
    bot_api.push_update(load_fixture("message__text_chinese"))
    sink.fail_with = RuntimeError("database is down")
    poller = make_adapter().poll(sink)
    with pytest.raises(RuntimeError):
        await anext(poller)
    assert OFFSET_KEY not in runtime.state.values

    sink.fail_with = None  # the application restarts the poller
    poller = make_adapter().poll(sink)
    await anext(poller)
    await poller.aclose()
    assert [i.external_id for i in sink.items] == ["987654321:101"]  # re-read, not skipped


async def test_polling_and_webhook_produce_identical_items(adapter, bot_api: FakeBotApi) -> None:
    update = load_fixture("message__document")
    via_webhook, via_polling = RecordingSink(), RecordingSink()
    await adapter.handle_webhook(webhook_request(update), via_webhook)
    bot_api.push_update(update)
    poller = adapter.poll(via_polling)
    await anext(poller)
    await poller.aclose()
    assert via_polling.items == via_webhook.items


async def test_unparseable_update_is_skipped_not_blocking(adapter, bot_api: FakeBotApi, runtime,
                                                          sink: RecordingSink) -> None:
    bot_api.push_update(load_fixture("message__missing_chat"))
    bot_api.push_update(load_fixture("future_update__unknown"))
    bot_api.push_update(load_fixture("message__voice"))
    poller = adapter.poll(sink)
    await anext(poller)
    await poller.aclose()
    assert [i.external_id for i in sink.items] == ["987654321:105"]
    assert runtime.state.values[OFFSET_KEY] == 10026


async def test_polled_callback_query_is_answered(adapter, bot_api: FakeBotApi, sink: RecordingSink) -> None:
    bot_api.push_update(load_fixture("callback_query__choice"))
    poller = adapter.poll(sink)
    await anext(poller)
    await poller.aclose()
    assert isinstance(sink.items[0], InboundMessage)
    assert sink.items[0].payload["choice"] == "faq:shipping"
    assert len(bot_api.calls_of("answerCallbackQuery")) == 1


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # PTB's own RetryAfter
async def test_transient_getupdates_errors_are_retried(adapter, bot_api: FakeBotApi,
                                                       sink: RecordingSink) -> None:
    adapter.poll_backoff = 0.01
    bot_api.fail_next("getUpdates", 502)
    bot_api.fail_next("getUpdates", 429, parameters={"retry_after": 0.01})
    bot_api.push_update(load_fixture("message__text_chinese"))
    poller = adapter.poll(sink)
    await anext(poller)
    await poller.aclose()
    assert len(bot_api.calls_of("getUpdates")) == 3
    assert [i.external_id for i in sink.items] == ["987654321:101"]


async def test_group_updates_requested_only_when_accepted(make_adapter, bot_api: FakeBotApi,
                                                          sink: RecordingSink) -> None:
    poller = make_adapter(accept_groups=True).poll(sink)
    await anext(poller)
    await poller.aclose()
    assert "channel_post" in bot_api.calls_of("getUpdates")[0].params["allowed_updates"]
