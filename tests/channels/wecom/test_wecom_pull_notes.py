"""The group commit of 微信客服 pull notes: never two writes of one kf account's row at once (the second
waited for the first's row lock until its commit reached the disk), different accounts side by side."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from scrm.services.wecom import kf_sync


async def test_notes_of_one_account_are_written_one_at_a_time_and_none_is_lost(monkeypatch) -> None:
    writing: dict[tuple[int, str], int] = {}
    overlaps: list[tuple[int, str]] = []
    written: dict[tuple[int, str], int] = {}
    concurrent: list[int] = []

    async def write(ctx: Any, notes: dict[tuple[int, str], tuple[int, str | None]]) -> None:
        for key in notes:
            if writing.get(key):
                overlaps.append(key)
            writing[key] = writing.get(key, 0) + 1
        concurrent.append(sum(writing.values()))
        await asyncio.sleep(0.01)  # the commit
        for key, (count, _) in notes.items():
            writing[key] -= 1
            written[key] = written.get(key, 0) + count

    monkeypatch.setattr(kf_sync, "_write_notes", write)
    ctx = SimpleNamespace(db=SimpleNamespace(is_sqlite=False), extras={}, redis=None)
    kf_sync.pull_here(ctx)  # type: ignore[arg-type]
    notes = kf_sync._notes(ctx)  # type: ignore[arg-type]
    a, b = (1, "wkA"), (2, "wkB")

    async def burst(key: tuple[int, str], n: int) -> None:
        for _ in range(n):
            await notes.submit(key, "tok")

    await asyncio.gather(*[burst(a, 5) for _ in range(20)], *[burst(b, 3) for _ in range(10)])
    assert not overlaps
    assert written == {a: 100, b: 30}
    assert max(concurrent) == 2  # the two accounts' notes were written side by side
    assert not notes.pending and not notes.writing
