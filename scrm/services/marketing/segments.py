"""Segments: rules on contacts compiled into ONE SQL query (live count, sample, broadcast targets).

Rules are AND/OR groups: {"op": "and"|"or", "rules": [group | condition, ...]}; a condition is
{"field": ..., "operator": ..., "value": ...}. Fields:

- tag: has | not_has (value: tag or list = any of)
- attributes.<key>: equals | not_equals | contains | in | gt | lt | between | is_set | not_set
  (operators and values checked against the attribute's type: text, number, date, choice)
- name | email | phone | language: equals | contains | in | is_set | not_set
- channel: has | not_has (value: channel type or list, e.g. "telegram")
- subscription: subscribed | opted_out (value: channel type) -- reachable, subscribed and not opted out
- first_seen | last_seen: within_days | older_than_days (int), or gt | lt | between (ISO dates)
  ("no message in 30 days" = last_seen older_than_days 30)
- conversation_label: has | not_has;  ticket_status: has | not_has (value: status or list)
- campaign: touched | not_touched | first_touch | last_touch (value: campaign id or list)
- churn_risk: at_risk | not_at_risk, or gt | lt | between on the 0-100 score
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, not_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models import (
    Contact,
    ContactIdentity,
    ContactTag,
    Conversation,
    ConversationLabel,
    Inbox,
    Ticket,
    utcnow,
)
from scrm.services.contacts.attributes import AttributeError_, attribute_types, coerce

MAX_DEPTH = 5
MAX_CONDITIONS = 100
TEXT_OPS = ("equals", "not_equals", "contains", "in", "is_set", "not_set")
TYPE_OPS: dict[str, tuple[str, ...]] = {
    "text": TEXT_OPS,
    "choice": ("equals", "not_equals", "in", "is_set", "not_set"),
    "number": ("equals", "not_equals", "in", "gt", "lt", "between", "is_set", "not_set"),
    "date": ("equals", "not_equals", "gt", "lt", "between", "is_set", "not_set"),
}
PROFILE_FIELDS = ("name", "email", "phone", "language")
TICKET_STATUSES = ("new", "open", "pending", "solved", "closed")


class SegmentError(ValueError):
    """The rules are invalid; the message names the rule and the problem."""


def _opted_out(channel: str) -> ColumnElement[bool]:
    return func.coalesce(Contact.opt_outs[f"broadcast:{channel}"].as_boolean(), false()) == true()


class _Compiler:
    def __init__(self, types: dict[str, tuple[str, list[Any]]], now: datetime) -> None:
        self.types = types
        self.now = now
        self.count = 0

    def group(self, node: Any, path: str, depth: int) -> ColumnElement[bool]:
        if not isinstance(node, dict):
            raise SegmentError(f"{path}: expected an object")
        if "field" in node:
            return self.condition(node, path)
        if depth > MAX_DEPTH:
            raise SegmentError(f"{path}: groups nest at most {MAX_DEPTH} deep")
        op = node.get("op", "and")
        if op not in ("and", "or"):
            raise SegmentError(f"{path}.op: must be 'and' or 'or', not {op!r}")
        children = node.get("rules", [])
        if not isinstance(children, list):
            raise SegmentError(f"{path}.rules: expected a list")
        parts = [self.group(c, f"{path}.rules[{i}]", depth + 1) for i, c in enumerate(children)]
        if not parts:
            return true()
        return and_(*parts) if op == "and" else or_(*parts)

    def condition(self, c: dict[str, Any], path: str) -> ColumnElement[bool]:
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise SegmentError(f"at most {MAX_CONDITIONS} conditions")
        field, op, value = c.get("field"), c.get("operator"), c.get("value")
        where = f"{path} ({field} {op})"
        if not isinstance(field, str):
            raise SegmentError(f"{path}.field: required")
        if field.startswith("attributes."):
            return self.attribute(field[len("attributes."):], op, value, where)
        if field in PROFILE_FIELDS:
            return self.text(getattr(Contact, field), op, value, where)
        if field == "tag":
            tags = self.strings(value, where)
            found = exists().where(ContactTag.contact_id == Contact.id, ContactTag.tag.in_(tags))
            return self.has(found, op, where)
        if field == "channel":
            channels = self.strings(value, where)
            found = exists().where(
                ContactIdentity.contact_id == Contact.id, Inbox.id == ContactIdentity.inbox_id,
                Inbox.channel_type.in_(channels),
            )
            return self.has(found, op, where)
        if field == "conversation_label":
            labels = self.strings(value, where)
            found = exists().where(
                Conversation.contact_id == Contact.id, ConversationLabel.conversation_id == Conversation.id,
                ConversationLabel.label.in_(labels),
            )
            return self.has(found, op, where)
        if field == "ticket_status":
            statuses = self.strings(value, where)
            bad = [s for s in statuses if s not in TICKET_STATUSES]
            if bad:
                raise SegmentError(f"{where}: unknown ticket status {bad[0]!r} (use {', '.join(TICKET_STATUSES)})")
            found = exists().where(Ticket.contact_id == Contact.id, Ticket.status.in_(statuses))
            return self.has(found, op, where)
        if field == "subscription":
            if not isinstance(value, str) or not value:
                raise SegmentError(f"{where}: value must be a channel type such as 'email'")
            if op == "opted_out":
                return _opted_out(value)
            if op == "subscribed":
                reachable = exists().where(
                    ContactIdentity.contact_id == Contact.id, Inbox.id == ContactIdentity.inbox_id,
                    Inbox.channel_type == value, ContactIdentity.reachable.is_(True),
                    ContactIdentity.subscribed.is_(True),
                )
                return and_(reachable, not_(_opted_out(value)))
            raise SegmentError(f"{where}: operator must be 'subscribed' or 'opted_out'")
        if field in ("first_seen", "last_seen"):
            return self.seen(getattr(Contact, f"{field}_at"), op, value, where)
        if field in ("campaign", "churn_risk"):
            from scrm.services.marketing import segment_rules_campaigns

            return segment_rules_campaigns.condition(field, op, value, where, SegmentError)
        raise SegmentError(f"{path}.field: unknown field {field!r}")

    @staticmethod
    def strings(value: Any, where: str) -> list[str]:
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and v for v in values):
            raise SegmentError(f"{where}: value must be a non-empty string or list of strings")
        return values

    @staticmethod
    def has(found: ColumnElement[bool], op: Any, where: str) -> ColumnElement[bool]:
        if op == "has":
            return found
        if op == "not_has":
            return not_(found)
        raise SegmentError(f"{where}: operator must be 'has' or 'not_has'")

    def text(self, col: Any, op: Any, value: Any, where: str) -> ColumnElement[bool]:
        if op == "is_set":
            return and_(col.is_not(None), col != "")
        if op == "not_set":
            return or_(col.is_(None), col == "")
        if op == "in":
            return col.in_(self.strings(value, where))
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise SegmentError(f"{where}: value must be text")
        if op == "equals":
            return col == str(value)
        if op == "not_equals":
            return or_(col.is_(None), col != str(value))
        if op == "contains":
            return func.lower(col).contains(str(value).lower(), autoescape=True)
        raise SegmentError(f"{where}: operator {op!r} not allowed on text (use {', '.join(TEXT_OPS)})")

    def attribute(self, key: str, op: Any, value: Any, where: str) -> ColumnElement[bool]:
        if key not in self.types:
            raise SegmentError(f"{where}: unknown attribute {key!r}")
        type_, choices = self.types[key]
        if op not in TYPE_OPS[type_]:
            raise SegmentError(f"{where}: operator {op!r} not allowed on a {type_} attribute "
                               f"(use {', '.join(TYPE_OPS[type_])})")
        elem = Contact.attributes[key]
        if type_ in ("text", "choice"):
            if type_ == "choice" and op in ("equals", "not_equals", "in"):
                for v in value if isinstance(value, list) else [value]:
                    self.typed(type_, v, choices, where)
            return self.text(elem.as_string(), op, value, where)
        col = elem.as_float() if type_ == "number" else elem.as_string()
        if op == "is_set":
            return elem.as_string().is_not(None)
        if op == "not_set":
            return elem.as_string().is_(None)
        if op == "in":
            if not isinstance(value, list) or not value:
                raise SegmentError(f"{where}: value must be a non-empty list")
            return col.in_([self.typed(type_, v, choices, where) for v in value])
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise SegmentError(f"{where}: value must be [low, high]")
            lo, hi = (self.typed(type_, v, choices, where) for v in value)
            return col.between(lo, hi)
        v = self.typed(type_, value, choices, where)
        return {"equals": col == v, "not_equals": or_(col.is_(None), col != v), "gt": col > v, "lt": col < v}[op]

    @staticmethod
    def typed(type_: str, value: Any, choices: list[Any], where: str) -> Any:
        if type_ == "number" and isinstance(value, str):  # a rule value must already be a number
            raise SegmentError(f"{where}: expected a number, got {value!r}")
        try:
            out = coerce(type_, value, choices, key=where)
        except AttributeError_ as exc:
            raise SegmentError(str(exc)) from None
        return float(out) if type_ == "number" else out

    def seen(self, col: Any, op: Any, value: Any, where: str) -> ColumnElement[bool]:
        if op in ("within_days", "older_than_days"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise SegmentError(f"{where}: value must be a number of days")
            cutoff = self.now - timedelta(days=float(value))
            return col >= cutoff if op == "within_days" else col < cutoff
        if op not in ("gt", "lt", "between"):
            raise SegmentError(f"{where}: operator must be within_days, older_than_days, gt, lt or between")
        values = value if op == "between" else [value]
        if not isinstance(values, list) or len(values) != (2 if op == "between" else 1):
            raise SegmentError(f"{where}: value must be [from, to] dates")
        try:
            days = [date.fromisoformat(str(v)) for v in values]
        except ValueError:
            raise SegmentError(f"{where}: expected dates YYYY-MM-DD") from None
        start = [datetime.combine(d, time.min, UTC) for d in days]
        if op == "gt":
            return col >= start[0] + timedelta(days=1)
        if op == "lt":
            return col < start[0]
        return and_(col >= start[0], col < start[1] + timedelta(days=1))


async def compile_rules(session: AsyncSession, rules: Any, now: datetime | None = None) -> ColumnElement[bool]:
    """Validate `rules` and return the SQL condition on Contact; raises SegmentError."""
    if rules is None:
        rules = {"op": "and", "rules": []}
    types = await attribute_types(session)
    return _Compiler(types, now or utcnow()).group(rules, "rules", 0)


async def members_query(session: AsyncSession, rules: Any, now: datetime | None = None) -> Select[int]:
    """SELECT contacts.id of the segment's live members (merged contacts excluded)."""
    cond = await compile_rules(session, rules, now)
    return select(Contact.id).where(Contact.merged_into_id.is_(None), cond)


async def preview(session: AsyncSession, rules: Any, sample: int = 10) -> dict[str, Any]:
    """Live count and a sample of members."""
    q = await members_query(session, rules)
    count = await session.scalar(select(func.count()).select_from(q.subquery()))
    ids = q.order_by(Contact.id.desc()).limit(sample).subquery()
    rows = (await session.execute(
        select(Contact.id, Contact.name, Contact.email, Contact.phone).where(Contact.id.in_(select(ids.c.id)))
        .order_by(Contact.id.desc())
    )).all()
    return {"count": int(count or 0),
            "sample": [{"id": r.id, "name": r.name, "email": r.email, "phone": r.phone} for r in rows]}
