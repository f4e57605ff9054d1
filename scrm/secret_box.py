"""Channel secrets encrypted at rest (Fernet, with key rotation).

Bot tokens, app secrets, AES keys, mail passwords and webhook signing secrets are stored as
`enc:v1:<Fernet token>` strings. The keys come from `SCRM_SECRET_KEY` (setting `security.secret_key`):
several comma-separated Fernet keys, the first encrypts, every one decrypts (MultiFernet), so a new
key is put first, `scrm rotate-secrets` re-encrypts every row, and the old key is dropped afterwards.

Encryption happens in the column types below, so every reader (adapters, workers, the API) sees
plain values and no code path can forget it. A value without the prefix is a row from before
encryption: it is read as it is and sealed when the process starts (scrm/db/reseal.py).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import JSON, Text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.types import TypeDecorator

from scrm.settings import Settings, SettingsError

log = logging.getLogger("scrm.secrets")
PREFIX = "enc:v1:"
KEY_FILE = "secret.key"
_box: MultiFernet | None = None


class SecretBoxError(RuntimeError):
    """A stored secret cannot be read or written (no key configured, or none of the keys fits)."""


def parse_keys(raw: str) -> MultiFernet:
    """The key ring from a comma-separated list of Fernet keys (newest first)."""
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise SettingsError("security.secret_key [SCRM_SECRET_KEY]: no key given")
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except ValueError:
        raise SettingsError("security.secret_key [SCRM_SECRET_KEY]: each comma-separated key must be a Fernet key "
                            "(32 url-safe base64-encoded bytes); make one with `scrm generate-secret-key`") from None


def new_key() -> str:
    return Fernet.generate_key().decode()


def _key_file(path: Path) -> str:
    """The key kept in `path`, created (0600, first writer wins) when there is none yet."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(new_key() + "\n")
    log.warning("generated a secret key for channel secrets in %s: keep it with the database (losing it "
                "loses the stored channel secrets)", path)
    return path.read_text().strip()


def resolve_keys(settings: Settings, *, generate_in: Path | None = None) -> str:
    """The configured keys; for SQLite (or the demo, `generate_in`) a key kept in var/ when none is set.

    A server on PostgreSQL without a key refuses to start: a generated key would live on one host's
    disk while the database is shared, and a second process would make another one.
    """
    configured = settings.security.secret_key
    if configured is not None and configured.get_secret_value().strip():
        return configured.get_secret_value()
    url = make_url(settings.database.url)
    if generate_in is None and url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return new_key()  # a database that dies with the process: so does its key
        generate_in = Path(url.database).resolve().parent
    if generate_in is None:
        raise SettingsError(
            "no secret key: channel secrets are stored encrypted, and with database.url on PostgreSQL the key "
            "must be given. Set SCRM_SECRET_KEY (or security.secret_key) to the output of "
            "`scrm generate-secret-key`, the same value in every scrm process.")
    generate_in.mkdir(parents=True, exist_ok=True)
    return _key_file(generate_in / KEY_FILE)


def install(raw_keys: str) -> MultiFernet:
    """Make these keys the process's key ring (checked first: a bad key stops the start)."""
    global _box
    _box = parse_keys(raw_keys)
    return _box


def _ring() -> MultiFernet:
    if _box is None:
        raise SecretBoxError("no secret key is installed in this process (scrm.secret_box.install)")
    return _box


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def seal(value: Any) -> str:
    """Encrypt one value (any JSON value) with the newest key."""
    data = json.dumps(value, ensure_ascii=False).encode()
    return PREFIX + _ring().encrypt(data).decode()


def unseal(value: Any) -> Any:
    """Decrypt a sealed value; a value stored before encryption is returned as it is."""
    if not is_sealed(value):
        return value
    try:
        return json.loads(_ring().decrypt(value[len(PREFIX):].encode()))
    except InvalidToken:
        raise SecretBoxError("a stored secret does not decrypt with any configured key (was SCRM_SECRET_KEY "
                             "changed without keeping the old key after the new one?)") from None


class SealedDict(TypeDecorator[dict[str, Any]]):
    """A JSON object whose values are stored sealed; its keys stay readable (which secrets are set)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: dict[str, Any] | None, dialect: Dialect) -> dict[str, Any] | None:
        if value is None:
            return None
        return {k: None if v is None else seal(v) for k, v in value.items()}

    def process_result_value(self, value: Any, dialect: Dialect) -> dict[str, Any] | None:
        if value is None:
            return None
        return {k: unseal(v) for k, v in value.items()}


class SealedText(TypeDecorator[str]):
    """A text column stored sealed."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else seal(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else unseal(value)
