"""Validated settings and secrets of the two WeCom inbox types: 微信客服 (`wecom_kf`) and 客户联系 (`wecom_contacts`)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from channels.base import AdapterSettings

DEFAULT_API_BASE_URL = "https://qyapi.weixin.qq.com"
_CORP_ID = re.compile(r"^w[wx][0-9A-Za-z]{6,30}$")


def _check_aes_key(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    try:
        key = base64.b64decode(raw + "=", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(raw) != 43 or len(key) != 32:
        raise ValueError("EncodingAESKey must be the 43-character key shown in the WeCom admin console")
    return value


class _Common(AdapterSettings):
    corp_id: str = Field(description="企业ID (CorpID), shown under 我的企业 → 企业信息")
    api_base_url: str = Field(DEFAULT_API_BASE_URL, description="WeCom API base URL (tests point it at a fake)")
    timestamp_window_seconds: float = Field(300.0, gt=0, description="callbacks older than this are refused")

    @field_validator("corp_id")
    @classmethod
    def _valid_corp_id(cls, value: str) -> str:
        value = value.strip()
        if not _CORP_ID.match(value):
            raise ValueError("corp_id looks like ww0123456789abcdef (企业ID)")
        return value

    @field_validator("api_base_url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("api_base_url must be an http(s) URL")
        return value.rstrip("/")


class _CommonSecrets(AdapterSettings):
    token: SecretStr = Field(description="callback Token (接收消息 → Token)")
    encoding_aes_key: SecretStr = Field(description="callback EncodingAESKey (43 characters)")

    @field_validator("encoding_aes_key")
    @classmethod
    def _valid_aes_key(cls, value: SecretStr) -> SecretStr:
        return _check_aes_key(value)


class WeComKfSettings(_Common):
    """One 微信客服 account (open_kfid) served through a self-built app."""

    open_kfid: str = Field(description="the kf account's open_kfid (wk...), from 微信客服 → 账号")
    handoff: Literal["in_step", "api_only"] = Field(
        "in_step",
        description="in_step: WeCom session state follows the handoff (bot 1, queue 2, human 3, resolved 4); "
        "api_only: the session stays with the API (state 1) so agents reply from scrm")
    servicers: dict[str, str] = Field(default_factory=dict,
                                      description="agent login → WeCom userid of the same person (servicer)")
    default_servicer_userid: str | None = Field(None, description="servicer for agents without a mapping")
    welcome_text: str | None = Field(None, max_length=1000, description="sent once on enter_session (welcome_code)")
    welcome_menu: list[str] = Field(default_factory=list, description="menu options under the welcome")
    queue_message: str | None = Field(None, max_length=500, description="sent with the pool code on a move to 待接入池")
    closing_message: str | None = Field(None, max_length=500, description="sent with the closing code on resolve")
    catchup_interval_seconds: float = Field(300.0, ge=60, description="token-less catch-up pull interval")
    voice_format: Literal[0, 1] = Field(0, description="0 AMR, 1 Silk")
    media_max_bytes: int = Field(20 * 1024 * 1024, ge=1, description=(
        "customer files above this are refused before download, with a note on the message (files over 20 MB "
        "are read in 20 MB Range chunks); keep it at or below storage.max_file_bytes"))

    @field_validator("open_kfid")
    @classmethod
    def _valid_kfid(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 64:
            raise ValueError("open_kfid is the wk... id of the kf account")
        return value


class WeComKfSecrets(_CommonSecrets):
    secret: SecretStr = Field(description="Secret of the self-built app listed in 微信客服 → 可调用接口的应用")


class WeComContactsSettings(_Common):
    """A 客户联系 connection: external contacts, corp tags, welcome messages and 群发."""

    welcome_text: str | None = Field(None, max_length=1000, description="welcome for new external contacts")
    sync_interval_seconds: float = Field(3600.0, ge=300, description="full re-sync interval")
    tag_group_name: str = Field("scrm", max_length=30, description="corp tag group for labels created in scrm")
    staff_userids: list[str] = Field(default_factory=list,
                                     description="staff to sync (empty: everyone with customer contacts)")


class WeComContactsSecrets(_CommonSecrets):
    secret: SecretStr = Field(description="the 客户联系 Secret (客户与上下游 → 客户联系 → API)")
