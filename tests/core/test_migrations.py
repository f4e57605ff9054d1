"""Migrations form one line: a new one revises the newest, so `scrm migrate` has one head to reach."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from scrm.db.migrate import alembic_config


def test_migrations_have_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"several migration heads {sorted(heads)}: make the newest revise the one before it"
