"""YAML with line numbers, and the generic shape checks a flow file's nodes go through.

The loader records the 1-based line of every mapping, key and list item, so each error can say
file:line; ShapeChecker turns a node into a text, a list of strings, an integer or a target, or
records why it cannot.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import yaml

from bot_flows.flow_model import END, FlowError, Text


class MarkedDict(dict[Any, Any]):
    line = 0
    key_lines: dict[Any, int]
    duplicates: list[tuple[Any, int]]


class MarkedList(list[Any]):
    line = 0
    item_lines: list[int] = []  # noqa: RUF012 - replaced per instance by the loader


class _MarkedLoader(yaml.SafeLoader):
    """SafeLoader that records the 1-based line of every mapping, key and list item."""


def _construct_map(loader: _MarkedLoader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)
    out = MarkedDict()
    out.line, out.key_lines, out.duplicates = node.start_mark.line + 1, {}, []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in out:
            out.duplicates.append((key, line))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _construct_seq(loader: _MarkedLoader, node: yaml.SequenceNode) -> MarkedList:
    out = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_MarkedLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_MarkedLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def parse(text: str) -> Any:
    """The YAML document with line marks (raises yaml.MarkedYAMLError)."""
    return yaml.load(text, Loader=_MarkedLoader)  # noqa: S506 - SafeLoader subclass


def did_you_mean(word: str, options: Mapping[str, Any] | list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class ShapeChecker:
    """Generic shapes of one flow document's nodes; collects FlowErrors with line numbers."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[FlowError] = []
        self.refs: list[tuple[str, int, str]] = []  # (file, line, qualified target)
        self.name: str | None = None
        self.name_line = 1
        self._flow = ""

    def err(self, line: int, message: str) -> None:
        self.errors.append(FlowError(self.file, line, message))

    def mapping(self, node: Any, line: int, what: str) -> MarkedDict | None:
        if isinstance(node, MarkedDict):
            for key, dup_line in node.duplicates:
                self.err(dup_line, f"duplicate key '{key}' in {what}")
            return node
        self.err(line, f"{what} must be a mapping, got {_kind(node)}")
        return None

    def keys(self, node: MarkedDict, allowed: tuple[str, ...], what: str,
             required: tuple[str, ...] = ()) -> None:
        for key in node:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed) or (" (YAML reads on/off/yes/no as booleans: quote it)"
                                                    if isinstance(key, bool) else "")
                self.err(node.key_lines[key], f"unknown key '{key}' in {what}{hint}")
        for key in required:
            if key not in node:
                self.err(node.line, f"{what} is missing required key '{key}'")

    def items(self, node: Any, line: int, what: str) -> list[tuple[Any, int]]:
        if isinstance(node, MarkedList):
            return list(zip(node, node.item_lines, strict=True))
        self.err(line, f"{what} must be a list, got {_kind(node)}")
        return []

    def strings(self, node: Any, line: int, what: str) -> tuple[str, ...]:
        values = [node] if isinstance(node, str | int) and not isinstance(node, bool) else node
        if isinstance(values, list) and values and all(
                isinstance(v, str | int) and not isinstance(v, bool) for v in values):
            return tuple(str(v) for v in values)
        self.err(line, f"{what} must be a string or a non-empty list of strings")
        return ()

    def integer(self, node: Any, line: int, what: str, minimum: int) -> int:
        if isinstance(node, int) and not isinstance(node, bool) and node >= minimum:
            return node
        self.err(line, f"{what} must be an integer >= {minimum}, got {node!r}")
        return minimum

    def text(self, node: Any, line: int, what: str) -> Text:
        if isinstance(node, str):
            return Text(node, node)
        if isinstance(node, MarkedDict) and node and set(node) <= {"zh", "en"} and all(
                isinstance(v, str) for v in node.values()):
            zh, en = node.get("zh"), node.get("en")
            return Text(zh or en or "", en or zh or "")
        self.err(line, f"{what} must be a text or a mapping with 'zh' and/or 'en' texts")
        return Text("", "")

    def target(self, node: Any, line: int, what: str) -> str:
        if not isinstance(node, str) or not node:
            self.err(line, f"{what} must be a state name, 'flow:state' or 'end'")
            return END
        ref = node if (node == END or ":" in node) else f"{self._flow}:{node}"
        self.refs.append((self.file, line, ref))
        return ref


def _kind(node: Any) -> str:
    if isinstance(node, MarkedDict):
        return "a mapping"
    if isinstance(node, MarkedList):
        return "a list"
    return "nothing" if node is None else type(node).__name__
