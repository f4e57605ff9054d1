"""Alembic environment: runs on the connection handed over by scrm.db.migrate."""

from __future__ import annotations

from alembic import context

from scrm.db.schema import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `scrm migrate` (scrm.db.migrate.upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite ALTER TABLE support for later migrations
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
