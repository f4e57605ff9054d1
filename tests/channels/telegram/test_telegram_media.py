"""Downloading inbound media with getFile: size limit, errors, and the token never shown."""

from __future__ import annotations

import logging

import pytest

from channels.telegram.adapter import FileFetchError, FileTooLargeError
from scrm.domain import Attachment
from tests.channels.telegram.fake_bot_api import DEFAULT_TOKEN, FakeBotApi

SECRET_PART = DEFAULT_TOKEN.split(":", 1)[1]


def photo(file_id: str = "AgACAgUAAxkBAAIBZ2Zmlarge", size: int | None = 82130) -> Attachment:
    return Attachment(kind="image", mime_type="image/jpeg", size=size,
                      source={"file_id": file_id, "file_unique_id": "AQADlarge", "file_size": size})


async def test_photo_is_downloaded(adapter, bot_api: FakeBotApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bot_api.add_file("AgACAgUAAxkBAAIBZ2Zmlarge", b"\xff\xd8jpeg-bytes", file_path="photos/file_42.jpg")
    fetched = await adapter.fetch_attachment(photo(size=11))
    assert fetched.data == b"\xff\xd8jpeg-bytes"
    assert fetched.filename == "file_42.jpg"
    assert fetched.mime_type == "image/jpeg"
    assert bot_api.downloads == ["photos/file_42.jpg"]
    assert SECRET_PART not in caplog.text


async def test_document_keeps_its_chinese_name(adapter, bot_api: FakeBotApi) -> None:
    bot_api.add_file("BQACdoc", b"%PDF", file_path="documents/file_7.pdf")
    att = Attachment(kind="file", filename="发票-2024.pdf", mime_type="application/pdf",
                     source={"file_id": "BQACdoc"})
    fetched = await adapter.fetch_attachment(att)
    assert (fetched.filename, fetched.mime_type, fetched.data) == ("发票-2024.pdf", "application/pdf", b"%PDF")


async def test_file_above_limit_is_refused_before_any_call(make_adapter, bot_api: FakeBotApi) -> None:
    adapter = make_adapter(max_file_bytes=1024)
    with pytest.raises(FileTooLargeError, match="above this inbox's limit"):
        await adapter.fetch_attachment(photo(size=4096))
    assert bot_api.calls == []


async def test_size_reported_by_getfile_is_checked_before_download(make_adapter, bot_api: FakeBotApi) -> None:
    adapter = make_adapter(max_file_bytes=10)
    bot_api.add_file("BQACbig", b"x" * 100, file_path="documents/big.bin")
    with pytest.raises(FileTooLargeError):
        await adapter.fetch_attachment(Attachment(kind="file", source={"file_id": "BQACbig"}))
    assert bot_api.downloads == []


async def test_expired_file_id_gives_clear_error_without_token(adapter, bot_api: FakeBotApi,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FileFetchError) as err:
        await adapter.fetch_attachment(photo("AgACexpired"))
    assert "invalid file_id" in str(err.value).lower()
    assert SECRET_PART not in str(err.value)
    assert SECRET_PART not in caplog.text


async def test_download_failure_hides_the_file_url(adapter, bot_api: FakeBotApi,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bot_api.add_file("AgACgone", b"data", file_path="photos/file_1.jpg", downloadable=False)
    with pytest.raises(FileFetchError) as err:
        await adapter.fetch_attachment(photo("AgACgone", size=None))
    assert SECRET_PART not in str(err.value)
    assert SECRET_PART not in repr(err.value.__cause__)
    assert SECRET_PART not in caplog.text


async def test_attachment_without_file_id_is_refused(adapter) -> None:
    with pytest.raises(FileFetchError):
        await adapter.fetch_attachment(Attachment(kind="image"))
