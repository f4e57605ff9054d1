"""What the application lends a WeCom adapter in adapter-level tests (runtime with request_pull, sink)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from tests.channels.wechat.wechat_fakes import FakeRuntime, MemoryCache, RecordingSink

__all__ = ["MemoryCache", "PullRuntime", "RecordingSink"]


class PullRuntime(FakeRuntime):
    """FakeRuntime that records the pulls a callback asks for."""

    def __init__(self, http: aiohttp.ClientSession, cache: MemoryCache | None = None) -> None:
        super().__init__(http, cache)
        self.pulls: list[dict[str, Any]] = []

    async def request_pull(self, data: Mapping[str, Any]) -> None:
        self.pulls.append(dict(data))
