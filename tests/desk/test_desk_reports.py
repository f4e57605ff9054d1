"""Report figures checked against numbers computed independently (plain Python) from fixture data."""

from __future__ import annotations

import csv
import io
import math
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from scrm.context import AppContext
from scrm.db.models import Contact, ContactIdentity, Conversation, Inbox, Message
from scrm.db.models_desk import ConversationStats, CsatSurvey, Team
from scrm.services.desk import reports
from tests.conftest import login, make_agent

START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2025, 3, 31, tzinfo=UTC)


def nearest_rank(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered)) - 1]


async def _fixture(ctx: AppContext) -> dict[str, Any]:
    """~60 conversations spread over Feb-Apr (some outside the range) with known figures."""
    rnd = random.Random(7)
    agents = [await make_agent(ctx, f"ag{i}", "agent") for i in range(3)]
    data: dict[str, Any] = {"convs": [], "msgs": [], "csat": [], "agents": agents}
    async with ctx.db.transaction() as s:
        inboxes = [Inbox(name="API", channel_type="api", settings={}, secrets={}),
                   Inbox(name="微信", channel_type="wechat_oa", settings={}, secrets={}),
                   Inbox(name="Sim", channel_type="api", settings={}, secrets={})]
        s.add_all(inboxes)
        await s.flush()
        team = Team(name="一线", inbox_id=None, auto_assign=False, max_open_per_agent=5, reassign_on_offline=False)
        s.add(team)
        await s.flush()
        data["team"], data["inboxes"] = team.id, [i.id for i in inboxes]
        data["channel"] = {i.id: i.channel_type for i in inboxes}
        contact = Contact(name="张三", attributes={}, opt_outs={})
        s.add(contact)
        await s.flush()
        idents = {}
        for i in inboxes:
            idents[i.id] = ContactIdentity(inbox_id=i.id, external_id="u", contact_id=contact.id, attributes={})
            s.add(idents[i.id])
        await s.flush()
        for _n in range(60):
            inbox = rnd.choice(inboxes)
            created = datetime(2025, 2, 20, tzinfo=UTC) + timedelta(hours=rnd.randrange(0, 24 * 50))
            assignee = rnd.choice([None, *agents])
            resolved = rnd.random() < 0.7
            resolved_at = created + timedelta(hours=rnd.randrange(1, 72)) if resolved else None
            c = Conversation(inbox_id=inbox.id, contact_id=contact.id, identity_id=idents[inbox.id].id,
                             status="resolved" if resolved else "open", handler="human" if assignee else "bot",
                             assignee_id=assignee, created_at=created, resolved_at=resolved_at, last_activity_at=created,
                             bot_state={}, meta={})
            s.add(c)
            await s.flush()
            human = assignee is not None
            frt_at = created + timedelta(minutes=rnd.randrange(1, 600)) if human else None
            st = ConversationStats(
                conversation_id=c.id, inbox_id=inbox.id, team_id=team.id if assignee == agents[0] else None,
                agent_id=assignee, priority="normal", created_at=created, human_involved=human,
                handoffs=rnd.choice([0, 1, 2]) if human else 0, warned=[], breached=[],
                first_response_at=frt_at, first_response_secs=float(rnd.randrange(60, 36000)) if human else None,
                resolved_at=resolved_at, resolution_secs=float(rnd.randrange(600, 200000)) if resolved else None,
                policy_id=1 if human and resolved else None, sla_met=(rnd.random() < 0.6) if human and resolved else None)
            s.add(st)
            data["convs"].append({"id": c.id, "inbox": inbox.id, "agent": assignee, "team": st.team_id,
                                  "created": created, "resolved_at": resolved_at, "status": c.status, "stats": st})
            for k in range(rnd.randrange(1, 6)):
                direction = rnd.choice(["in", "out"])
                kind = "contact" if direction == "in" else rnd.choice(["agent", "bot", "system"])
                private = kind == "system" or (kind == "agent" and rnd.random() < 0.2)
                at = created + timedelta(minutes=7 * k)
                s.add(Message(conversation_id=c.id, inbox_id=inbox.id, direction=direction, sender_kind=kind,
                              text="x", private=private, attachments=[], payload={}, edit_history=[], created_at=at))
                data["msgs"].append({"inbox": inbox.id, "conv": data["convs"][-1], "direction": direction,
                                     "kind": kind, "private": private, "at": at})
            if resolved and rnd.random() < 0.6:
                rating = rnd.randint(1, 5)
                answered = resolved_at + timedelta(minutes=30)  # type: ignore[operator]
                s.add(CsatSurvey(conversation_id=c.id, inbox_id=inbox.id, contact_id=contact.id, agent_id=assignee,
                                 team_id=st.team_id, status="answered", rating=rating, asked_at=resolved_at,
                                 answered_at=answered))
                data["csat"].append({"inbox": inbox.id, "agent": assignee, "team": st.team_id, "rating": rating,
                                     "answered": answered})
    return data


def _inr(t: datetime | None) -> bool:
    return t is not None and START <= t < END


def _expected(data: dict[str, Any], key: Any) -> dict[Any, dict[str, Any]]:
    """The figures computed row by row in Python, grouped by `key(conv-like dict)`."""
    out: dict[Any, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    frt: dict[Any, list[float]] = defaultdict(list)
    res: dict[Any, list[float]] = defaultdict(list)
    for c in data["convs"]:
        g, st = key(c), c["stats"]
        if _inr(c["created"]):
            out[g]["opened"] += 1
            out[g]["handoffs"] += st.handoffs
        if c["status"] == "resolved" and _inr(c["resolved_at"]):
            out[g]["resolved"] += 1
            out[g]["resolved_by_bot"] += int(c["agent"] is None)
        if _inr(st.first_response_at):
            frt[g].append(st.first_response_secs)
        if _inr(st.resolved_at):
            res[g].append(st.resolution_secs)
            if st.sla_met is not None:
                out[g]["sla_total"] += 1
                out[g]["sla_met"] += int(st.sla_met)
    for g, values in frt.items():
        out[g]["first_response_median"] = nearest_rank(values, 0.5)
        out[g]["first_response_p90"] = nearest_rank(values, 0.9)
    for g, values in res.items():
        out[g]["resolution_median"] = nearest_rank(values, 0.5)
        out[g]["resolution_p90"] = nearest_rank(values, 0.9)
    for m in data["msgs"]:
        if _inr(m["at"]) and not m["private"] and m["kind"] != "system":
            out[key({**m["conv"], "inbox": m["inbox"]})]["messages_" + m["direction"]] += 1
    return out


async def test_report_figures_match_an_independent_computation(ctx: AppContext) -> None:
    data = await _fixture(ctx)
    groupings = {
        "none": lambda c: "all",
        "inbox": lambda c: c["inbox"],
        "agent": lambda c: c["agent"],
        "team": lambda c: c["team"],
        "channel": lambda c: data["channel"][c["inbox"]],
    }
    fields = ("opened", "resolved", "messages_in", "messages_out", "handoffs", "sla_total", "sla_met",
              "first_response_median", "first_response_p90", "resolution_median", "resolution_p90", "resolved_by_bot")
    for group, key in groupings.items():
        async with ctx.db.session() as s:
            report = await reports.build(s, START, END, group)
        got = {r["key"]: r for r in report["rows"]}
        want = _expected(data, key)
        for g, figures in want.items():
            for f in fields:
                assert (got.get(g, {}).get(f) or 0) == (figures.get(f) or 0), (group, g, f)
    # CSAT by agent
    async with ctx.db.session() as s:
        by_agent = {r["key"]: r for r in (await reports.build(s, START, END, "agent", ["csat"]))["rows"]}
    ratings: dict[Any, list[int]] = defaultdict(list)
    for a in data["csat"]:
        if _inr(a["answered"]):
            ratings[a["agent"]].append(a["rating"])
    assert ratings
    for agent, values in ratings.items():
        row = by_agent[agent]
        assert row["csat_answers"] == len(values)
        assert row["csat_average"] == round(sum(values) / len(values), 2)
        assert [row[f"csat_{n}"] for n in range(1, 6)] == [values.count(n) for n in range(1, 6)]
    # the deflection rate is resolved-by-bot over resolved
    async with ctx.db.session() as s:
        (row,) = (await reports.build(s, START, END, "none", ["deflection"]))["rows"]
    assert row["deflection_rate"] == round(row["resolved_by_bot"] / row["resolved_total"], 4)


async def test_report_api_json_csv_and_roles(ctx: AppContext, client: Any, admin: dict[str, Any]) -> None:
    data = await _fixture(ctx)
    await make_agent(ctx, "mkt", "marketer")
    headers = await login(client, "ag0", "password-123")  # agents read reports
    q = "from=2025-03-01&to=2025-03-31&group_by=inbox"
    resp = await client.get(f"/api/v1/desk/reports?{q}", headers=headers)
    assert resp.status == 200
    body = await resp.json()
    assert {r["label"] for r in body["rows"]} <= {"API", "微信", "Sim"}
    assert len(body["timeseries"]) == 31 and body["timeseries"][0]["day"] == "2025-03-01"
    opened_local = sum(1 for c in data["convs"]
                       if datetime(2025, 2, 28, 16, tzinfo=UTC) <= c["created"] < datetime(2025, 3, 31, 16, tzinfo=UTC))
    assert sum(d["opened"] for d in body["timeseries"]) == sum(r.get("opened", 0) for r in body["rows"]) == opened_local
    resp = await client.get(f"/api/v1/desk/reports.csv?{q}", headers=headers)
    assert resp.headers["Content-Type"].startswith("text/csv")
    text = (await resp.read()).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["label"] for r in rows} == {r["label"] for r in body["rows"]}
    assert sum(int(r["opened"] or 0) for r in rows) == opened_local
    resp = await client.get("/api/v1/desk/reports?from=2025-03-31&to=2025-03-01", headers=headers)
    assert resp.status == 400 and "before" in (await resp.json())["error"]["message"]
    resp = await client.get("/api/v1/desk/reports?group_by=planet", headers=headers)
    assert resp.status == 400
    client.session.cookie_jar.clear()
    headers = await login(client, "mkt", "password-123")
    assert (await client.get(f"/api/v1/desk/reports?{q}", headers=headers)).status == 403


async def test_old_reports_address_redirects_into_the_app(client: Any) -> None:
    resp = await client.get("/desk/reports?from=2025-01-01&group_by=agent", allow_redirects=False)
    assert resp.status == 301 and resp.headers["Location"] == "/reports?from=2025-01-01&group_by=agent"
    page = await client.get("/reports")
    assert page.status == 200 and 'src="/static/js/main.js"' in await page.text()
    for asset in ("reports.js", "charts.js"):
        assert (await client.get(f"/static/js/{asset}")).status == 200
