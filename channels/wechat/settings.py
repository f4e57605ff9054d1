"""Validated settings and secrets of a `wechat_oa` inbox."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from channels.base import AdapterSettings

DEFAULT_API_BASE_URL = "https://api.weixin.qq.com"


class TemplateSettings(BaseModel):
    """The inbox's notification template: its id and how to fill its fields.

    `fields` maps a WeChat template field (e.g. "first", "keyword1", "remark") to a key of the
    outbound message's metadata; the special key "text" means the message text.
    """

    model_config = ConfigDict(extra="forbid")

    template_id: str
    fields: dict[str, str] = Field(default_factory=lambda: {"first": "text"})
    url: str | None = None


class WeChatSettings(AdapterSettings):
    app_id: str | None = None
    # 消息加解密方式, as chosen in the WeChat console: plaintext (明文), compatible (兼容) or safe (安全).
    # Unset: safe when an EncodingAESKey is configured (plaintext bodies are then refused), else plaintext.
    callback_mode: Literal["plaintext", "compatible", "safe"] | None = None
    api_base_url: str = DEFAULT_API_BASE_URL
    timestamp_window_seconds: float = Field(default=300.0, gt=0)
    passive_reply_timeout: float = Field(default=4.0, ge=0, lt=5.0)  # WeChat gives up after 5 s
    use_stable_token: bool = True
    template: TemplateSettings | None = None
    # Fetch each new follower's UnionID (user/info; the account must be bound to an open platform) so
    # the same person on WeCom becomes one contact.
    link_unionid: bool = False
    # Decides the 群发 quota: a subscription account (订阅号) may mass-send once a day, a service account
    # (服务号) four times a month per follower.
    account_type: Literal["subscription", "service"] = "service"
    # Subscription-message templates the follower subscribes to once for good (长期订阅); the others are
    # one-time: each "accept" in the popup allows one send.
    long_term_templates: list[str] = Field(default_factory=list)


class WeChatSecrets(AdapterSettings):
    app_id: str | None = None
    app_secret: SecretStr
    token: SecretStr
    encoding_aes_key: SecretStr | None = None  # needed for compatible / safe mode
    previous_encoding_aes_key: SecretStr | None = None  # still accepted during key rotation

    @field_validator("encoding_aes_key", "previous_encoding_aes_key")
    @classmethod
    def _valid_aes_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        raw = value.get_secret_value()
        try:
            key = base64.b64decode(raw + "=", validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(raw) != 43 or len(key) != 32:
            raise ValueError("EncodingAESKey must be the 43-character key shown by WeChat")
        return value
