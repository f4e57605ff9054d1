"""Core pipeline tests count exactly the messages agents send: the FAQ bot is switched off here
(its behaviour is tested in tests/bot)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

BOT_DISABLED = Path(__file__).resolve().parent / "fixtures" / "bot_disabled.toml"


@pytest.fixture
async def ctx(ctx):  # type: ignore[no-untyped-def]
    from scrm.services.bot import rounds as bot

    bot.get_runtime(ctx).enabled = False
    return ctx


@pytest.fixture
async def quiet_ctx(settings: Any, backend: str) -> AsyncIterator[Any]:
    """PostgreSQL only: a context whose events nobody works off (no bot answering between the steps; a test
    plays the worker's part itself where it needs one)."""
    from scrm.bootstrap import build_context

    if backend != "postgresql":
        pytest.skip("PostgreSQL's behaviour (the batch function, row locks)")
    context = await build_context(settings)
    yield context
    await context.close()
