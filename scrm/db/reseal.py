"""Re-encrypt the stored channel secrets: at start (rows from before encryption) and on key rotation.

The column types that seal and unseal are in scrm/secret_box.py; this walks the tables that use them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm.attributes import flag_modified

from scrm.db.models import Inbox
from scrm.db.models_desk import WebhookSubscription
from scrm.secret_box import is_sealed

log = logging.getLogger("scrm.secrets")


async def reseal(db: Any, *, everything: bool) -> int:
    """Re-encrypt stored secrets with the newest key; only rows still holding plaintext unless `everything`.

    Reads the raw column (not the decrypting type) to tell sealed from plain, then rewrites the row
    through the model, whose column type seals with the newest key. Returns the rows rewritten.
    """
    rewritten = 0
    async with db.transaction() as s:
        for model, column, raw_sql in (
            (Inbox, "secrets", "SELECT id, secrets FROM inboxes"),
            (WebhookSubscription, "secret", "SELECT id, secret FROM desk_webhooks"),
        ):
            for row_id, raw in (await s.execute(text(raw_sql))).all():
                if isinstance(raw, str) and column == "secrets":
                    raw = json.loads(raw)
                values = list(raw.values()) if isinstance(raw, dict) else [raw]
                if not everything and all(v is None or is_sealed(v) for v in values):
                    continue
                row = (await s.execute(select(model).where(model.id == row_id))).scalar_one()
                setattr(row, column, _plain(getattr(row, column)))
                flag_modified(row, column)
                rewritten += 1
        await s.flush()
    return rewritten


def _plain(value: Any) -> Any:
    """A fresh copy of the decrypted value (so the ORM writes it, and seals it with the newest key)."""
    return dict(value) if isinstance(value, dict) else value


async def seal_at_start(db: Any) -> None:
    """`seal_stored_secrets` for a starting process: a failure is logged, not fatal (next start retries)."""
    try:
        await seal_stored_secrets(db)
    except Exception as exc:  # noqa: BLE001 - plaintext rows still work meanwhile
        log.warning("could not encrypt stored plaintext secrets now: %s", type(exc).__name__)


async def seal_stored_secrets(db: Any) -> int:
    """At start: seal secrets stored before encryption was introduced (idempotent, cheap when none)."""
    count = await reseal(db, everything=False)
    if count:
        log.info("encrypted the stored secrets of %d rows written before encryption at rest", count)
    return count
