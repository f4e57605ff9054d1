"""Core pipeline tests count exactly the messages agents send: the FAQ bot is switched off here
(its behaviour is tested in tests/bot)."""

from __future__ import annotations

from pathlib import Path

import pytest

BOT_DISABLED = Path(__file__).resolve().parent / "fixtures" / "bot_disabled.toml"


@pytest.fixture
async def ctx(ctx):  # type: ignore[no-untyped-def]
    from scrm.services.bot import rounds as bot

    bot.get_runtime(ctx).enabled = False
    return ctx
