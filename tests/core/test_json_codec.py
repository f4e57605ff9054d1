"""The hot paths' JSON (scrm/json_codec.py) reads back what the standard library's would, for what scrm stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from scrm import json_codec


def test_values_read_back_as_the_standard_library_reads_them() -> None:
    value = {"text": "运费怎么收？ 😀", "n": 3, "f": 0.5, "ok": True, "none": None, "list": [1, "二", {"k": []}],
             1: "an int key", "nested": {"bot_state": {"step": "ask_order", "slots": {"order": "A-1"}}}}
    text = json_codec.dumps(value)
    assert json.loads(text) == json.loads(json.dumps(value))  # int keys become strings, as json.dumps makes them
    assert json_codec.loads(text) == json.loads(text) and json_codec.loads(text.encode()) == json.loads(text)
    assert "运费" in text  # UTF-8, not \u escapes: a Chinese message's JSON is half the size


def test_what_orjson_refuses_goes_through_the_standard_library() -> None:
    huge = 2**70  # beyond 64 bits
    assert json.loads(json_codec.dumps({"id": huge})) == {"id": huge}


def test_default_makes_values_json_has_no_type_for() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    at = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    assert json.loads(json_codec.dumps({"x": Odd(), "at": at}, default=str)) == {
        "x": "odd", "at": "2026-12-07 09:00:00+00:00"}  # str(at), as json.dumps(default=str) writes it
