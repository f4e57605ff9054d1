"""Contact CSV import (column mapping, dry run, per-row errors; UTF-8 with/without BOM or GB18030 from
Excel) and export (UTF-8 with BOM, which Excel opens correctly)."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from sqlalchemy import func, select

from scrm import events as ev
from scrm.db.models import Contact, ContactTag, utcnow
from scrm.domain import read_cell, safe_row
from scrm.services.agents import audit
from scrm.services.contacts.attributes import AttributeError_, attribute_types, coerce
from scrm.services.uow import Tx

PROFILE = ("name", "email", "phone", "language")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE_RE = re.compile(r"^\+?[0-9 ()-]{5,32}$")
MAX_ROWS = 50_000
YES = {"1", "true", "yes", "y", "是", "同意"}
NO = {"0", "false", "no", "n", "否", "不同意", ""}


class CsvError(ValueError):
    """The file as a whole cannot be read (encoding, header, mapping)."""


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), else GB18030 (Excel on Chinese Windows); else a clear error."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise CsvError("the file is neither UTF-8 nor GB18030 (GBK); save it as 'CSV UTF-8' and retry") from None


def _bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in YES:
        return True
    if v in NO:
        return False
    raise AttributeError_(f"{where}: expected yes/no, got {value!r}")


async def import_csv(tx: Tx, data: bytes, mapping: dict[str, str], *, dry_run: bool = False,
                     agent_id: int | None = None) -> dict[str, Any]:
    """Create or update contacts (matched by email, then phone). Bad rows are reported, good rows kept."""
    text = decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CsvError("the file is empty") from None
    types = await attribute_types(tx.session)
    for column, field in mapping.items():
        if column not in header:
            raise CsvError(f"column {column!r} is not in the file (columns: {', '.join(header)})")
        if field in PROFILE or field in ("tags", "consent.email", "ignore"):
            continue
        if field.startswith("attributes.") and field[11:] in types:
            continue
        raise CsvError(f"column {column!r} maps to unknown field {field!r}")
    if not any(f in ("email", "phone", "name") for f in mapping.values()):
        raise CsvError("map at least one of name, email or phone")
    index = {field: header.index(col) for col, field in mapping.items() if field != "ignore"}
    errors: list[dict[str, Any]] = []
    created = updated = rows = 0
    for line_no, raw in enumerate(reader, start=2):
        if not any(cell.strip() for cell in raw):
            continue
        rows += 1
        if rows > MAX_ROWS:
            raise CsvError(f"at most {MAX_ROWS} rows per import")
        try:
            values = _row([read_cell(cell) for cell in raw], index, types, line_no)
        except AttributeError_ as exc:
            errors.append({"row": line_no, "message": str(exc)})
            continue
        contact = await _find(tx, values.get("email"), values.get("phone"))
        if dry_run:
            created += contact is None
            updated += contact is not None
            continue
        if contact is None:
            now = utcnow()
            contact = Contact(attributes={}, opt_outs={}, first_seen_at=now, last_seen_at=now)
            tx.session.add(contact)
            created += 1
        else:
            updated += 1
        for name in PROFILE:
            if values.get(name):
                setattr(contact, name, values[name])
        attrs = dict(contact.attributes or {})
        attrs.update(values.get("attributes", {}))
        if "consent_email" in values:
            attrs["consent"] = dict(attrs.get("consent") or {}) | {"email": values["consent_email"]}
        contact.attributes = attrs
        await tx.session.flush()
        if values.get("tags"):
            have = set(await tx.session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id)))
            tx.session.add_all(ContactTag(contact_id=contact.id, tag=t) for t in values["tags"] if t not in have)
    result = {"rows": rows, "created": created, "updated": updated, "failed": len(errors), "errors": errors[:500],
              "dry_run": dry_run}
    if not dry_run:
        audit.record(tx, agent_id, "contact.import", "contact", None, rows=rows, created=created, updated=updated,
                     failed=len(errors))
        tx.emit(ev.CONTACT_UPDATED, imported=created + updated)
    return result


def _row(raw: list[str], index: dict[str, int], types: dict[str, tuple[str, list[Any]]], line: int) -> dict[str, Any]:
    get = lambda f: raw[index[f]].strip() if index[f] < len(raw) else ""  # noqa: E731
    out: dict[str, Any] = {"attributes": {}}
    problems = []
    for field in index:
        value = get(field)
        try:
            if field == "email":
                if value and not EMAIL_RE.match(value):
                    raise AttributeError_(f"email: {value!r} is not an email address")
                out["email"] = value.lower() or None
            elif field == "phone":
                if value and not PHONE_RE.match(value):
                    raise AttributeError_(f"phone: {value!r} is not a phone number")
                out["phone"] = value or None
            elif field in ("name", "language"):
                if len(value) > (255 if field == "name" else 16):
                    raise AttributeError_(f"{field}: too long")
                out[field] = value or None
            elif field == "tags":
                tags = [t.strip() for t in re.split(r"[;,，；|]", value) if t.strip()]
                if any(len(t) > 64 for t in tags):
                    raise AttributeError_("tags: a tag is longer than 64 characters")
                out["tags"] = tags
            elif field == "consent.email":
                out["consent_email"] = _bool(value, "consent.email")
            elif value:
                key = field[11:]
                type_, choices = types[key]
                out["attributes"][key] = coerce(type_, value, choices, key=key)
        except AttributeError_ as exc:
            problems.append(str(exc))
    if not (out.get("email") or out.get("phone") or out.get("name")):
        problems.append("the row has no name, email or phone")
    if problems:
        raise AttributeError_("; ".join(problems))
    return out


async def _find(tx: Tx, email: str | None, phone: str | None) -> Contact | None:
    live = Contact.merged_into_id.is_(None)
    if email:
        c = await tx.session.scalar(select(Contact).where(live, func.lower(Contact.email) == email).limit(1))
        if c is not None:
            return c
    if phone:
        return await tx.session.scalar(select(Contact).where(live, Contact.phone == phone).limit(1))
    return None


async def export_csv(tx: Tx) -> str:
    """Every live contact with tags and attributes, UTF-8 with BOM."""
    types = await attribute_types(tx.session)
    keys = sorted(types)
    tags: dict[int, list[str]] = {}
    for cid, tag in (await tx.session.execute(select(ContactTag.contact_id, ContactTag.tag).order_by(ContactTag.tag))):
        tags.setdefault(cid, []).append(tag)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "name", "email", "phone", "language", "tags", "consent.email",
                *[f"attributes.{k}" for k in keys], "first_seen_at", "last_seen_at"])
    for c in (await tx.session.scalars(select(Contact).where(Contact.merged_into_id.is_(None)).order_by(Contact.id))):
        attrs = c.attributes or {}
        consent = (attrs.get("consent") or {}).get("email") if isinstance(attrs.get("consent"), dict) else None
        w.writerow(safe_row([c.id, c.name or "", c.email or "", c.phone or "", c.language or "",
                             ";".join(tags.get(c.id, [])), "" if consent is None else ("yes" if consent else "no"),
                             *["" if attrs.get(k) is None else attrs.get(k) for k in keys],
                             c.first_seen_at.isoformat(), c.last_seen_at.isoformat()]))
    return "\ufeff" + buf.getvalue()
