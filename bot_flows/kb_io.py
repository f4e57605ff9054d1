"""Knowledge-base import/export as CSV, JSON and YAML, with validation errors by line or row."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import yaml

from bot_flows.matcher import FaqEntry
from scrm.domain import Choice, read_cell, safe_cell

Format = Literal["csv", "json", "yaml"]
KbError = tuple[int, str]  # (line number, 1-based; 0 when the whole document is unreadable, message)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_LANGS = {"zh", "en"}
_KEYS = {"id", "question", "paraphrases", "answer", "category", "language", "enabled", "buttons"}
CSV_COLUMNS = ["id", "question", "paraphrases", "answer", "category", "language", "enabled", "buttons"]


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return True
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "y", "on", "是"}:
        return True
    if text in {"0", "false", "no", "n", "off", "否"}:
        return False
    return None


def _entry(raw: Any, line: int, errors: list[KbError]) -> FaqEntry | None:
    """Validate one raw record (a mapping) into an entry, appending (line, message) errors."""
    if not isinstance(raw, dict):
        errors.append((line, "entry must be a mapping with id, question, answer"))
        return None
    before = len(errors)
    unknown = sorted(set(map(str, raw)) - _KEYS)
    if unknown:
        errors.append((line, f"unknown field(s): {', '.join(unknown)}"))
    eid = str(raw.get("id") or "").strip()
    if not _ID.match(eid):
        errors.append((line, f"id {eid!r} must be 1-100 letters, digits, '-', '_' or '.'"))
    question = str(raw.get("question") or "").strip()
    if not question:
        errors.append((line, "question is required"))
    answer = str(raw.get("answer") or "").strip()
    if not answer:
        errors.append((line, "answer is required"))
    paras = raw.get("paraphrases") or []
    if isinstance(paras, str):
        paras = [p for p in paras.split("|")]
    if not isinstance(paras, list) or not all(isinstance(p, str | int | float) for p in paras):
        errors.append((line, "paraphrases must be a list of strings"))
        paras = []
    language = str(raw.get("language") or "zh").strip().lower()
    if language not in _LANGS:
        errors.append((line, f"language {language!r} must be one of {sorted(_LANGS)}"))
    enabled = _as_bool(raw.get("enabled"))
    if enabled is None:
        errors.append((line, f"enabled {raw.get('enabled')!r} must be true or false"))
    buttons_raw = raw.get("buttons") or []
    if isinstance(buttons_raw, str):
        try:
            buttons_raw = json.loads(buttons_raw)
        except ValueError:
            errors.append((line, "buttons must be a JSON list of {label, payload}"))
            buttons_raw = []
    buttons: list[Choice] = []
    if not isinstance(buttons_raw, list):
        errors.append((line, "buttons must be a list of {label, payload}"))
        buttons_raw = []
    for b in buttons_raw:
        if not isinstance(b, dict) or not str(b.get("label") or "").strip() or not str(b.get("payload") or "").strip():
            errors.append((line, "each button needs a label and a payload"))
            continue
        buttons.append(Choice(label=str(b["label"]).strip(), payload=str(b["payload"]).strip()))
    if len(errors) > before:
        return None
    return FaqEntry(
        id=eid, question=question, paraphrases=tuple(str(p).strip() for p in paras if str(p).strip()),
        answer=answer, category=str(raw.get("category") or "").strip(), language=language,
        enabled=bool(enabled), buttons=tuple(buttons),
    )


def _records_yaml(text: str, errors: list[KbError]) -> list[tuple[int, Any]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        errors.append((mark.line + 1 if mark else 0, f"invalid YAML: {getattr(exc, 'problem', exc)}"))
        return []
    if root is None:
        return []
    if not isinstance(root, yaml.SequenceNode):
        errors.append((root.start_mark.line + 1, "the knowledge base must be a list of entries"))
        return []
    data = yaml.safe_load(text)
    return [(node.start_mark.line + 1, item) for node, item in zip(root.value, data, strict=True)]


def _records_json(text: str, errors: list[KbError]) -> list[tuple[int, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        errors.append((exc.lineno, f"invalid JSON: {exc.msg}"))
        return []
    if not isinstance(data, list):
        errors.append((1, "the knowledge base must be a JSON array of entries"))
        return []
    # Line of each top-level element: re-scan with the decoder to learn where each one starts.
    lines: list[int] = []
    dec = json.JSONDecoder()
    pos = text.index("[") + 1
    for _ in data:
        while text[pos] in " \t\r\n,":
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        _obj, pos = dec.raw_decode(text, pos)
    return list(zip(lines, data, strict=True))


def _records_csv(text: str, errors: list[KbError]) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = {"id", "question", "answer"} - set(reader.fieldnames or [])
    if missing:
        errors.append((1, f"CSV header lacks column(s): {', '.join(sorted(missing))}"))
        return []
    out = []
    for row in reader:
        row = {k: read_cell(v) if isinstance(v, str) else v for k, v in row.items()
               if k is not None and v not in (None, "") or k in {"id", "question", "answer"}}
        out.append((reader.line_num, row))
    return out


def parse_kb(text: str, fmt: Format) -> tuple[list[FaqEntry], list[KbError]]:
    """Parse and validate a knowledge base; returns the valid entries and (line, message) errors.

    A dry run is simply calling this and showing the errors; nothing is stored.
    """
    errors: list[KbError] = []
    readers = {"yaml": _records_yaml, "json": _records_json, "csv": _records_csv}
    if fmt not in readers:
        return [], [(0, f"unknown format {fmt!r}; use csv, json or yaml")]
    entries: list[FaqEntry] = []
    seen: dict[str, int] = {}
    for line, raw in readers[fmt](text, errors):
        entry = _entry(raw, line, errors)
        if entry is None:
            continue
        if entry.id in seen:
            errors.append((line, f"duplicate id {entry.id!r} (first on line {seen[entry.id]})"))
            continue
        seen[entry.id] = line
        entries.append(entry)
    errors.sort()
    return entries, errors


def entry_to_dict(entry: FaqEntry) -> dict[str, Any]:
    """The plain mapping form of an entry (as written to JSON and YAML)."""
    return {
        "id": entry.id, "question": entry.question, "paraphrases": list(entry.paraphrases),
        "answer": entry.answer, "category": entry.category, "language": entry.language,
        "enabled": entry.enabled, "buttons": [{"label": b.label, "payload": b.payload} for b in entry.buttons],
    }


def dump_kb(entries: Iterable[FaqEntry], fmt: Format) -> str:
    """Serialize entries; CSV joins paraphrases with '|' and stores buttons as JSON."""
    rows = [entry_to_dict(e) for e in entries]
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    if fmt == "yaml":
        return str(yaml.safe_dump(rows, allow_unicode=True, sort_keys=False, width=1000))
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            cells = {**r, "paraphrases": "|".join(r["paraphrases"]), "enabled": str(r["enabled"]).lower(),
                     "buttons": json.dumps(r["buttons"], ensure_ascii=False) if r["buttons"] else ""}
            w.writerow({k: safe_cell(v) for k, v in cells.items()})
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}; use csv, json or yaml")


def load_kb_file(path: str, fmt: Format | None = None) -> tuple[list[FaqEntry], list[KbError]]:
    """Read a knowledge-base file (format from the extension unless given)."""
    ext = fmt or {"yml": "yaml"}.get(path.rsplit(".", 1)[-1].lower(), path.rsplit(".", 1)[-1].lower())
    with open(path, encoding="utf-8") as f:
        return parse_kb(f.read(), ext)  # type: ignore[arg-type]


def validate(text: str, fmt: Format) -> Sequence[KbError]:
    """Dry run: only the (line, message) errors."""
    return parse_kb(text, fmt)[1]
