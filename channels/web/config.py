"""Settings and secrets of a `web` inbox (the website widget and the H5 chat page)."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from channels.base import AdapterSettings

_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_COLOR = r"^#[0-9a-fA-F]{6}$"
_ORIGIN_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
DEFAULT_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"]


class Localized(BaseModel):
    """One text in Chinese and English; the widget shows the visitor's language, else the other one."""

    model_config = ConfigDict(extra="forbid")
    zh: str = Field("", max_length=2000)
    en: str = Field("", max_length=2000)

    def pick(self, lang: str) -> str:
        """The text in `lang` (zh/en), falling back to the other language."""
        first, second = (self.zh, self.en) if lang == "zh" else (self.en, self.zh)
        return first or second


class PrechatField(BaseModel):
    """A pre-chat form field: name/email/phone fill the contact; other names become contact attributes."""

    model_config = ConfigDict(extra="forbid")
    name: str
    label: Localized = Field(default_factory=Localized)
    type: Literal["text", "email", "tel", "textarea"] = "text"
    required: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _FIELD_NAME.match(value):
            raise ValueError("a field name is 1-32 lower-case letters, digits or _ and starts with a letter")
        return value


def normalize_origin(value: str) -> str:
    """`https://Shop.example.com:443/` -> `https://shop.example.com`; ValueError when it is no origin."""
    raw = value.strip()
    parts = urlsplit(raw.lower())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin like https://shop.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{value!r}: an origin has no path, query or user (https://shop.example.com)")
    host = parts.hostname  # keeps a leading "*." (any subdomain)
    if not _ORIGIN_HOST.match(host) and not re.match(r"^\d{1,3}(\.\d{1,3}){3}$", host):
        raise ValueError(f"{value!r} has an invalid host name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port") from None
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


class WebSettings(AdapterSettings):
    """What an admin sets for a website widget / H5 chat page."""

    allowed_origins: list[str] = Field(default_factory=list, max_length=50,
                                       description="sites that may embed the widget, e.g. https://shop.example.com")
    title: Localized = Field(default_factory=lambda: Localized(zh="在线客服", en="Chat with us"))
    color: str = Field("#2563eb", pattern=_COLOR, description="brand colour (#rrggbb)")
    greeting: Localized = Field(default_factory=lambda: Localized(
        zh="您好！有什么可以帮您？", en="Hi there! How can we help you?"))
    away_message: Localized = Field(default_factory=lambda: Localized(
        zh="我们暂时不在线。留下邮箱，我们会通过邮件回复您。",
        en="We are away right now. Leave your email and we will reply by email."))
    hours_banner: Localized = Field(default_factory=Localized, description="business-hours banner text")
    prechat_enabled: bool = False
    prechat_fields: list[PrechatField] = Field(default_factory=lambda: [
        PrechatField(name="name", label=Localized(zh="您的称呼", en="Your name"), required=False),
        PrechatField(name="email", label=Localized(zh="邮箱", en="Email"), type="email", required=True),
    ], max_length=12)
    require_identity: bool = Field(False, description="only visitors signed by your site (identifier_hash)")
    offline_email: bool = True
    email_inbox_id: int | None = Field(None, description="email inbox for transcripts and offline replies")
    email_after_seconds: int = Field(300, ge=30, le=86400)
    max_message_chars: int = Field(5000, ge=1, le=65536)
    max_attachment_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    attachment_types: list[str] = Field(default_factory=lambda: list(DEFAULT_TYPES), max_length=50)
    messages_per_minute: int = Field(20, ge=1, le=10_000)
    messages_per_minute_per_ip: int = Field(120, ge=1, le=1_000_000)
    sessions_per_minute_per_ip: int = Field(30, ge=1, le=1_000_000)
    buttons: bool = True

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        return [normalize_origin(v) for v in values]

    @field_validator("prechat_fields")
    @classmethod
    def _unique(cls, values: list[PrechatField]) -> list[PrechatField]:
        names = [f.name for f in values]
        if len(set(names)) != len(names):
            raise ValueError("pre-chat field names must be unique")
        return values


class WebSecrets(AdapterSettings):
    # Shared with the website: identifier_hash = hex HMAC-SHA256(hmac_secret, identifier).
    hmac_secret: str = Field(min_length=16)
    # Never leaves the server: signs visitor tokens and file links.
    token_key: str = Field(min_length=32)
