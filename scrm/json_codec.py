"""JSON for the hot paths: the database's JSON columns, the event log's payloads and Redis event messages.

JSON was about a twentieth of the worker's CPU (py-spy, bench/bot_reply.py at 240 msg/s): decoding every
JSON column a batch reads (conversations' bot state and meta, contacts' attributes, messages' payloads)
and encoding the event log's rows and Redis messages. orjson does both several times faster than the
standard library.

The text differs where it does not matter: no spaces, and non-ASCII characters as UTF-8 rather than
\\u escapes (what `ensure_ascii=False` gives). Non-string keys become strings, as the standard library
makes them; datetimes and dataclasses go to `default` as there. What orjson refuses (an integer beyond
64 bits, a nesting deeper than it allows) goes through the standard library, so nothing the old code
stored fails now.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

# Datetimes and dataclasses go to `default`, as with json.dumps (orjson would write them its own way).
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """`value` as JSON text (`default`: what to make of a value JSON has no type for, as json.dumps)."""
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, default=default)


def loads(raw: str | bytes) -> Any:
    """JSON text (or its UTF-8 bytes) as Python values."""
    return orjson.loads(raw)
