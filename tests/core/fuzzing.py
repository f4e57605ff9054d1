"""The hostile-input fuzz driver shared by the webhook and the web chat / WeCom fuzz tests: Hypothesis
strategies of hostile values, and the property every endpoint must keep: whatever arrives, the answer is
never a 5xx, and nothing is stored unless the answer is a 2xx.

Examples per endpoint are bounded for CI (SCRM_FUZZ_EXAMPLES, default 40).
"""

from __future__ import annotations

import asyncio
import json
import os
import xml.sax.saxutils
from collections.abc import Awaitable, Callable
from datetime import timedelta, timezone
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from scrm.db.models import Contact, ContactIdentity, Message

T = TypeVar("T")
EXAMPLES = int(os.environ.get("SCRM_FUZZ_EXAMPLES", "40"))

# --- hostile values -------------------------------------------------------------------------------------------
HOSTILE_TEXT = ["\u0000", "a\u0000b", "\ud800", "x\udfffy", "", " ", "汉字" * 50, "\u202e", "\r\n", "'; DROP TABLE x; --",
                "<script>", "%00", "\\u0000", "9" * 400]
hostile_str = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),  # any code point, surrogates included
    st.sampled_from(HOSTILE_TEXT),
)
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([2**63, -(2**63) - 1, 10**30]))
times = st.one_of(
    st.datetimes(timezones=st.sampled_from([None, *[timezone(timedelta(hours=h)) for h in (-12, 0, 8, 14)]]))
    .map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "1969-12-31T23:59:59Z", "not a time"]),
)
scalar = st.one_of(hostile_str, numbers, st.booleans(), st.none(), times)
# Text a valid request may carry: anything but lone surrogates (NUL characters included: they are removed).
free_text = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=60),
                      st.sampled_from(["a\u0000b", "\u0000", "汉字" * 50, "\u202e", "'; DROP TABLE x; --"]))
ident = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
json_value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(hostile_str, inner, max_size=3)),
                          max_leaves=8)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()  # NaN/Infinity tokens and \\ud800 escapes survive


def deep_json(depth: int) -> bytes:
    return b'{"id": "deep", "sender": {"id": "u", "attributes": ' + b"[" * depth + b"]" * depth + b"}}"


garbage = st.one_of(st.binary(max_size=300), st.integers(1, 6000).map(deep_json),
                    st.sampled_from([b"", b"{", b"null", b"[]", b'"x"', b"\xff\xfe", b"\xef\xbb\xbf{}"]))
# XML character data a valid callback may carry.
xml_text = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=40)


def xml_escape(value: Any) -> str:
    """`value` as XML character data; lone surrogates become U+FFFD (XML cannot carry them)."""
    return xml.sax.saxutils.escape(str(value)).encode("utf-8", "surrogatepass").decode("utf-8", "replace")


# --- the driver -----------------------------------------------------------------------------------------------
async def stored_counts(ctx: Any) -> tuple[int, int, int]:
    """How many messages, contacts and identities are stored."""
    async with ctx.db.session() as s:
        return tuple([int(await s.scalar(select(func.count()).select_from(model)))  # type: ignore[misc]
                      for model in (Message, Contact, ContactIdentity)])


async def run_examples(strategy: st.SearchStrategy[T], examples: int, one: Callable[[T], Awaitable[None]]) -> None:
    """Run `one` on `examples` drawn cases. Hypothesis drives from a thread; `one` runs on the test's loop."""
    loop = asyncio.get_running_loop()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(strategy)
    def check(case: T) -> None:
        asyncio.run_coroutine_threadsafe(one(case), loop).result(timeout=60)

    await asyncio.to_thread(check)


async def fuzz_endpoint(client: Any, ctx: Any, strategy: st.SearchStrategy[dict[str, Any]], examples: int,
                        fill: Callable[[str], str], *, reaches_storage: bool = True,
                        settle: Callable[[], Awaitable[Any]] | None = None) -> list[int]:
    """Send each drawn request and check the property; returns the statuses seen.

    A request is {"method" (POST), "path", "data", "headers", "params"}; `fill` fills placeholders such as
    "{id}" in its path, text body and headers. A request {"make": f, "plan": ...} is made by f() when sent
    (for encryption with random padding); `settle` waits for work an earlier request started in the background.
    """
    seen: list[int] = []

    async def one(request: dict[str, Any]) -> None:
        if "make" in request:
            request = {**request["make"](), "plan": request["plan"]}
        if settle is not None:
            await settle()
        before = await stored_counts(ctx)
        data = request.get("data")
        if isinstance(data, bytes):
            data = fill(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        headers = {k: fill(v) for k, v in (request.get("headers") or {}).items()}
        resp = await client.request(request.get("method", "POST"), fill(request["path"]), data=data,
                                    headers=headers, params=request.get("params"))
        text = await resp.text()
        seen.append(resp.status)
        assert resp.status < 500, f"{resp.status} for {request!r}: {text[:300]}"
        if not 200 <= resp.status < 300:
            assert await stored_counts(ctx) == before, f"stored something but answered {resp.status}: {request!r}"

    await run_examples(strategy, examples, one)
    assert len(seen) >= examples
    if reaches_storage:  # the valid-in-shape requests got through: the fuzz reached the database
        assert any(200 <= status < 300 for status in seen), sorted(set(seen))
    return seen
