"""media/get of big files: over WeCom's 20 MB a plain call answers 830002 and the file is read in Range
chunks of at most 20 MB (PROTOCOL.md §4); a file over the inbox's media_max_bytes is refused with a
note before its body is read. The chunk size is shrunk here so the test moves kilobytes, not megabytes."""

from __future__ import annotations

from typing import Any

import pytest

from channels.wecom import api as wecom_api
from scrm.domain import Attachment, PermanentSendError
from tests.channels.wecom.fake_wecom_api import FakeWeCom

DATA = bytes(range(256)) * 14  # 3584 bytes


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch, fake: FakeWeCom) -> None:
    monkeypatch.setattr(wecom_api, "MEDIA_CHUNK", 1000)
    fake.media_limit = 1000  # "20 MB", scaled down


async def test_a_file_over_the_plain_limit_is_read_in_ranges(small_chunks: None, fake: FakeWeCom, make_kf: Any) -> None:
    kf = make_kf()
    fake.media["BIG"] = (DATA, "application/pdf")
    fetched = await kf.fetch_attachment(Attachment(kind="file", source={"media_id": "BIG"}))
    assert fetched.data == DATA and fetched.mime_type == "application/pdf" and fetched.filename == "BIG.jpg"
    # The plain call (830002), then chunks of at most the limit, in order.
    assert fake.media_ranges == ["", "bytes=0-999", "bytes=1000-1999", "bytes=2000-2999", "bytes=3000-3999"]


async def test_a_small_file_is_one_plain_call(small_chunks: None, fake: FakeWeCom, make_kf: Any) -> None:
    kf = make_kf()
    fake.media["SMALL"] = (DATA[:500], "image/png")
    fetched = await kf.fetch_attachment(Attachment(kind="image", source={"media_id": "SMALL"}))
    assert fetched.data == DATA[:500] and fake.media_ranges == [""]


async def test_a_file_over_media_max_bytes_is_refused_before_download(small_chunks: None, fake: FakeWeCom,
                                                                      make_kf: Any) -> None:
    kf = make_kf(media_max_bytes=2500)
    fake.media["HUGE"] = (DATA, "video/mp4")
    with pytest.raises(PermanentSendError) as refused:
        await kf.fetch_attachment(Attachment(kind="video", source={"media_id": "HUGE"}))
    assert "3584 bytes" in refused.value.reason and "WeCom client" in refused.value.reason
    assert fake.media_ranges == ["", "bytes=0-999"]  # the first range told the size: nothing more was read


async def test_a_plain_answer_over_media_max_bytes_is_refused(fake: FakeWeCom, make_kf: Any) -> None:
    kf = make_kf(media_max_bytes=100)
    fake.media["MID"] = (DATA[:700], "image/jpeg")
    with pytest.raises(PermanentSendError) as refused:
        await kf.fetch_attachment(Attachment(kind="image", source={"media_id": "MID"}))
    assert "700 bytes" in refused.value.reason and fake.media_ranges == [""]  # Content-Length told: no range asked


async def test_an_expired_media_id_still_fails_with_its_code(small_chunks: None, make_kf: Any) -> None:
    with pytest.raises(PermanentSendError) as refused:
        await make_kf().fetch_attachment(Attachment(kind="file", source={"media_id": "gone"}))
    assert "40007" in refused.value.reason


async def test_the_agent_sees_why_a_big_customer_file_was_not_kept(client, ctx, fake: FakeWeCom, api_url: str) -> None:
    from scrm.listeners.media import fetch_message_media
    from tests.channels.wecom.wecom_samples import OPEN_KFID
    from tests.integration.helpers_integration import inbound, messages
    from tests.integration.wecom_helpers import kf_inbox, notify

    fake.base_url = api_url  # type: ignore[attr-defined]
    inbox = await kf_inbox(ctx, fake, media_max_bytes=1000)
    fake.media["BIG_FILE"] = (DATA, "application/pdf")
    fake.add({"msgid": "big-1", "open_kfid": OPEN_KFID, "external_userid": "wmMediaCustomer000000000000001",
              "send_time": 1700000000, "origin": 3, "msgtype": "file", "file": {"media_id": "BIG_FILE"}})
    await notify(client, ctx, fake, inbox.id)
    (message,) = await inbound(ctx, inbox.id)
    await fetch_message_media(ctx, message.id)
    (message,) = await messages(ctx, id=message.id)
    (attachment,) = message.attachments
    assert "storage_key" not in attachment and "3584 bytes" in attachment["error"]
