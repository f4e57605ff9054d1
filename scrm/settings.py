"""Settings: defaults in config/scrm.toml, then `--config FILE`, then `SCRM_<SECTION>_<KEY>` env vars.

Validated at start: a bad value stops the server with a message naming the key and what is expected.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "scrm.toml"


class SettingsError(Exception):
    """A configuration value is missing or invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str | None = None  # e.g. https://crm.example.com (registers platform webhooks)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    shutdown_timeout: float = Field(10.0, ge=0)
    run_worker: bool = True  # embedded default: the outbox worker runs inside `scrm serve`
    run_pollers: bool = True
    uvloop: bool = True  # the libuv event loop where installed (Linux, macOS); false: asyncio's own
    # `scrm demo` turns this on: the customer simulator (memory channel) and its unauthenticated webhook.
    demo: bool = False

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v else v


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///var/scrm.db"
    pool_size: int = Field(10, ge=1)
    auto_migrate: bool = True
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _driver(cls, v: str) -> str:
        if not v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        return v


class RedisSettings(_Section):
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return v or None


class SecuritySettings(_Section):
    session_ttl_hours: float = Field(12.0, gt=0)
    login_attempts: int = Field(5, ge=1)  # failed logins per login+address ...
    login_window_seconds: int = Field(300, ge=1)  # ... within this window
    cookie_secure: bool = False  # set true behind HTTPS
    # Fernet keys for channel secrets at rest, comma-separated, newest first (env SCRM_SECRET_KEY).
    # Required with PostgreSQL; with SQLite one is generated next to the database file when unset.
    secret_key: SecretStr | None = None
    # Private destinations server-side requests may reach (CIDRs, host names, *.suffix); see scrm/outbound.py.
    outbound_allow: list[str] = Field(default_factory=list)

    @field_validator("outbound_allow")
    @classmethod
    def _allow_entries(cls, v: list[str]) -> list[str]:
        import ipaddress

        for entry in v:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
                continue
            except ValueError:
                pass
            name = entry.strip().removeprefix("*.")
            if not name or not all(part and len(part) <= 63 and part.replace("-", "").isalnum()
                                   for part in name.rstrip(".").split(".")):
                raise ValueError(f"{entry!r} is neither a CIDR (10.0.0.0/8) nor a host name")
        return [e.strip() for e in v]


class WebhookSettings(_Section):
    timestamp_tolerance_seconds: int = Field(300, ge=1)


class WorkerSettings(_Section):
    batch_size: int = Field(20, ge=1)
    concurrency: int = Field(8, ge=1)
    poll_interval: float = Field(1.0, gt=0)
    lease_seconds: float = Field(60.0, gt=0)
    send_timeout: float = Field(30.0, gt=0)  # must stay below lease_seconds
    max_attempts: int = Field(8, ge=1)
    backoff_base: float = Field(2.0, gt=0)
    backoff_max: float = Field(600.0, gt=0)
    # `scrm worker` lowers its CPU priority by this much (os.nice): on a host shared with `scrm serve`,
    # follow-up work (bot, desk, sends) yields the CPU to acknowledgements, which have deadlines.
    nice: int = Field(10, ge=0, le=19)
    # A running worker counts a heartbeat in the database this often; one whose count stays put for
    # five of them is dead, and its deliveries are recovered then rather than when their lease ends.
    heartbeat_seconds: float = Field(2.0, gt=0, le=60)
    # WeCom 微信客服: pull kf/sync_msg in a process of its own that the worker starts (scrm/kf_pull_process.py),
    # at the normal priority, instead of in the worker's loop behind the bot and desk work. Off: the worker pulls.
    wecom_pull_process: bool = True


    @model_validator(mode="after")
    def _lease_covers_send(self) -> WorkerSettings:
        if self.send_timeout >= self.lease_seconds:
            raise ValueError("worker.send_timeout must be smaller than worker.lease_seconds")
        return self


class EventsSettings(_Section):
    """The event log (scrm/event_log.py): how consumers work it and how long worked events are kept."""

    # Events one consumer transaction works. Its conversation row writes are held back to just before its
    # commit (event_batch.py), so ingest does not wait for a batch; its desk stats rows stay locked until then.
    batch_size: int = Field(16, ge=1, le=1000)
    consumers: int = Field(2, ge=1, le=16)  # consumer tasks per worker process (PostgreSQL; SQLite: one)
    poll_interval: float = Field(1.0, gt=0)  # work committed while no wake-up arrived (Redis down) waits at most this
    retention_hours: float = Field(24.0, ge=0)  # worked events kept for debugging, then pruned


class StorageSettings(_Section):
    path: str = "var/files"
    max_file_bytes: int = Field(20 * 1024 * 1024, ge=1)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_logs: bool = Field(False, alias="json")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DisplaySettings(_Section):
    timezone: str = "Asia/Shanghai"
    language: Literal["zh", "en"] = "zh"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    security: SecuritySettings = SecuritySettings()
    webhooks: WebhookSettings = WebhookSettings()
    worker: WorkerSettings = WorkerSettings()
    events: EventsSettings = EventsSettings()
    storage: StorageSettings = StorageSettings()
    logging: LoggingSettings = LoggingSettings()
    display: DisplaySettings = DisplaySettings()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise SettingsError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """SCRM_<SECTION>_<KEY>=value; values are parsed as TOML scalars when they look like one."""
    overrides: dict[str, Any] = {}
    sections = {name: model for name, model in Settings.model_fields.items()}
    for name, value in env.items():
        if not name.startswith("SCRM_") or name.startswith("SCRM_TEST_"):
            continue
        rest = name[5:].lower()
        for section in sections:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                overrides.setdefault(section, {})[key] = _parse_scalar(value)
                break
    return overrides


def _parse_scalar(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load defaults, the optional config file, env vars and explicit overrides; validate all."""
    data = _read_toml(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {}
    if config_file:
        data = _merge(data, _read_toml(Path(config_file)))
    environ = os.environ if env is None else env
    data = _merge(data, _env_overrides(environ))
    if environ.get("SCRM_SECRET_KEY"):  # the documented name (not SCRM_SECURITY_SECRET_KEY, which works too)
        data = _merge(data, {"security": {"secret_key": environ["SCRM_SECRET_KEY"]}})
    if overrides:
        data = _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        env = "SCRM_" + "_".join(str(p) for p in err["loc"]).upper()
        given = err.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  {key} [{env}]: {err['msg']}{shown}")
    return "\n".join(lines)
