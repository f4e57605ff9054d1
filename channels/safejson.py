"""JSON from untrusted bodies: what `json.loads` accepts but nothing downstream can store is refused here.

`json.loads` takes NaN and Infinity (and turns 1e400 into infinity), which no JSON column stores;
it raises RecursionError, not a decode error, on deeply nested arrays; it decodes bytes with
`surrogatepass` and accepts `\\ud800` escapes, strings no database driver can encode; and a
5,000-digit integer raises a plain ValueError. Each of these is a ValueError with a clear message
here, answered 400 by the caller.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64  # nesting of objects and arrays; real payloads stay under 10
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class UnsafeJSON(ValueError):
    """The body is not JSON, or is JSON that cannot be stored (the message says which)."""


def _constant(name: str) -> Any:
    raise UnsafeJSON(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeJSON(f"number {text[:20]} is out of range")
    return value


# Built once: `json.loads` with parse_* options builds a new decoder (and its scanner) on every call.
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)


def loads(raw: bytes | str) -> Any:
    """Parse a JSON body strictly (UTF-8, finite numbers, at most MAX_DEPTH levels, no lone surrogates)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    except UnicodeDecodeError as exc:
        raise UnsafeJSON(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = _DECODER.decode(text)
    except UnsafeJSON:
        raise
    except RecursionError:
        raise UnsafeJSON(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise UnsafeJSON(f"malformed JSON: {exc}") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4,300-digit conversion limit
        raise UnsafeJSON(f"malformed JSON: {exc}") from None
    _check(value, lone_surrogates=bool(_SURROGATE_ESCAPE.search(text)))
    return value


def _check(value: Any, *, lone_surrogates: bool) -> None:
    """Depth, and (only when the text has surrogate escapes) strings a UTF-8 encoder refuses; no recursion."""
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                raise UnsafeJSON(f"JSON nested deeper than {MAX_DEPTH} levels")
            todo += [(k, depth) for k in item] if lone_surrogates else []
            todo += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                raise UnsafeJSON(f"JSON nested deeper than {MAX_DEPTH} levels")
            todo += [(v, depth + 1) for v in item]
        elif lone_surrogates and isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise UnsafeJSON("string with an unpaired surrogate escape (\\ud800-\\udfff)") from None
