"""Segment rules compile to one query whose counts match counts computed independently here."""

from __future__ import annotations

import random

import pytest

from scrm.db.models import ContactIdentity, Conversation, ConversationLabel, Ticket
from scrm.db.models_marketing import AttributeDefinition
from scrm.services.marketing.segments import SegmentError, preview
from tests.conftest import make_inbox
from tests.marketing.helpers_marketing import make_contact

CITIES = ["北京", "上海", "Shenzhen", None]


@pytest.fixture
async def population(ctx):
    rng = random.Random(7)
    tg = await make_inbox(ctx, "telegram", name="TG", secrets={"bot_token": "123456:ABC"})
    mail = await make_inbox(ctx, "email", name="Mail", settings={"address": "n@example.com"}, secrets={})
    async with ctx.db.transaction() as s:
        s.add_all([AttributeDefinition(key="city", label="城市", type="text", choices=[]),
                   AttributeDefinition(key="spend", label="Spend", type="number", choices=[]),
                   AttributeDefinition(key="birthday", label="Birthday", type="date", choices=[]),
                   AttributeDefinition(key="level", label="Level", type="choice", choices=["gold", "silver"])])
    people = []
    for i in range(60):
        p = {
            "tags": tuple(t for t in ("vip", "新客") if rng.random() < 0.4),
            "city": rng.choice(CITIES), "spend": rng.choice([None, 0, 50, 100, 250.5, 1000]),
            "birthday": rng.choice([None, "1990-01-15", "2001-06-30"]), "level": rng.choice([None, "gold", "silver"]),
            "days": rng.choice([0, 10, 45, 90]), "tg": rng.random() < 0.6, "mail": rng.random() < 0.5,
            "opted": rng.random() < 0.2, "label": rng.choice([None, "投诉", "售后"]),
            "ticket": rng.choice([None, "open", "solved"]),
        }
        attrs = {k: p[k] for k in ("city", "spend", "birthday", "level") if p[k] is not None}
        idents = ([(tg, f"t{i}", {})] if p["tg"] else []) + ([(mail, f"m{i}@x.com", {})] if p["mail"] else [])
        p["id"] = await make_contact(ctx, name=f"c{i}", tags=p["tags"], attributes=attrs, identities=idents,
                                     opt_outs={"broadcast:email": True} if p["opted"] else {},
                                     last_seen_days_ago=p["days"])
        if p["label"] or p["ticket"]:
            async with ctx.db.transaction() as s:
                ident = (await s.execute(ContactIdentity.__table__.select().where(
                    ContactIdentity.contact_id == p["id"]))).first()
                if ident is None:
                    p["label"] = p["ticket"] = None
                    people.append(p)
                    continue
                conv = Conversation(inbox_id=ident.inbox_id, contact_id=p["id"], identity_id=ident.id, bot_state={},
                                    meta={})
                s.add(conv)
                await s.flush()
                if p["label"]:
                    s.add(ConversationLabel(conversation_id=conv.id, label=p["label"]))
                if p["ticket"]:
                    s.add(Ticket(number=1000 + i, subject="t", status=p["ticket"], contact_id=p["id"], fields={}))
        people.append(p)
    return people


def cond(field, operator, value=None):
    return {"field": field, "operator": operator, "value": value}


CASES = [
    (cond("tag", "has", "vip"), lambda p: "vip" in p["tags"]),
    (cond("tag", "not_has", ["vip", "新客"]), lambda p: not p["tags"]),
    (cond("attributes.city", "equals", "北京"), lambda p: p["city"] == "北京"),
    (cond("attributes.city", "contains", "shen"), lambda p: p["city"] == "Shenzhen"),
    (cond("attributes.city", "in", ["北京", "上海"]), lambda p: p["city"] in ("北京", "上海")),
    (cond("attributes.city", "is_set"), lambda p: p["city"] is not None),
    (cond("attributes.spend", "gt", 100), lambda p: p["spend"] is not None and p["spend"] > 100),
    (cond("attributes.spend", "lt", 50), lambda p: p["spend"] is not None and p["spend"] < 50),
    (cond("attributes.spend", "between", [50, 250.5]), lambda p: p["spend"] is not None and 50 <= p["spend"] <= 250.5),
    (cond("attributes.birthday", "lt", "2000-01-01"), lambda p: p["birthday"] == "1990-01-15"),
    (cond("attributes.level", "equals", "gold"), lambda p: p["level"] == "gold"),
    (cond("channel", "has", "telegram"), lambda p: p["tg"]),
    (cond("subscription", "opted_out", "email"), lambda p: p["opted"]),
    (cond("subscription", "subscribed", "email"), lambda p: p["mail"] and not p["opted"]),
    (cond("last_seen", "older_than_days", 30), lambda p: p["days"] > 30),  # churn risk
    (cond("last_seen", "within_days", 30), lambda p: p["days"] <= 30),
    (cond("conversation_label", "has", "投诉"), lambda p: p["label"] == "投诉"),
    (cond("ticket_status", "has", ["open"]), lambda p: p["ticket"] == "open"),
    ({"op": "or", "rules": [cond("tag", "has", "vip"), {"op": "and", "rules": [
        cond("attributes.spend", "gt", 100), cond("channel", "not_has", "email")]}]},
     lambda p: "vip" in p["tags"] or (p["spend"] is not None and p["spend"] > 100 and not p["mail"])),
]


async def test_segment_counts_match_independent_counts(ctx, population):
    for i, (rule, expected) in enumerate(CASES):
        rules = rule if "op" in rule else {"op": "and", "rules": [rule]}
        async with ctx.db.session() as s:
            result = await preview(s, rules, sample=100)
        want = {p["id"] for p in population if expected(p)}
        assert result["count"] == len(want), f"case {i}: {rule}"
        assert {m["id"] for m in result["sample"]} == want, f"case {i}: {rule}"


BAD = [
    (cond("attributes.nope", "equals", "x"), "unknown attribute 'nope'"),
    (cond("attributes.spend", "gt", "lots"), "expected a number"),
    (cond("attributes.spend", "contains", "1"), "not allowed on a number attribute"),
    (cond("attributes.level", "equals", "bronze"), "not one of gold, silver"),
    (cond("attributes.birthday", "gt", "yesterday"), "expected a date"),
    (cond("favourite", "equals", "x"), "unknown field 'favourite'"),
    (cond("ticket_status", "has", "lost"), "unknown ticket status"),
    (cond("last_seen", "older_than_days", "thirty"), "number of days"),
]


async def test_bad_rules_are_clear_errors(ctx, population):
    for rule, message in BAD:
        async with ctx.db.session() as s:
            with pytest.raises(SegmentError, match=message):
                await preview(s, {"op": "and", "rules": [rule]})
