"""Auto-assignment: round robin among online team members, per-agent limit, offline agents skipped."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import update

from scrm.context import AppContext
from scrm.db.models import Agent
from scrm.services.conversations import actions as conv_svc
from scrm.services.desk.assignment import TeamIn, pick_round_robin, save_team
from scrm.services.uow import unit_of_work
from tests.conftest import make_agent, make_inbox
from tests.desk.conftest import conv, say, settle


async def _team(ctx: AppContext, members: list[int], **kw: Any) -> int:
    async with unit_of_work(ctx) as tx:
        team = await save_team(tx, TeamIn(name=kw.pop("name", "一线"), members=members, **kw))
        return team.id


async def _queue(ctx: AppContext, inbox: Any, n: int, start: int = 0) -> list[int]:
    ids = []
    for i in range(start, start + n):
        cid = await say(ctx, inbox, "转人工", sender=f"c{i}")
        async with unit_of_work(ctx) as tx:
            await conv_svc.do_set_handler(tx, cid, None, "queue")
        await settle(ctx)
        ids.append(cid)
    return ids


async def test_round_robin_is_fair_and_respects_the_limit(desk: AppContext) -> None:
    agents = [await make_agent(desk, f"a{i}", "agent") for i in range(3)]
    await _team(desk, agents, max_open_per_agent=2)
    inbox = await make_inbox(desk)
    ids = await _queue(desk, inbox, 7)
    owners = [(await conv(desk, c)).assignee_id for c in ids]
    assert owners[:6] == [agents[0], agents[1], agents[2]] * 2  # strict rotation
    assert Counter(owners[:6]) == {a: 2 for a in agents}
    assert owners[6] is None  # everyone is at the limit: it waits unassigned in the queue
    assert (await conv(desk, ids[6])).handler == "queue"


async def test_offline_agents_are_skipped_and_freed_capacity_is_used(desk: AppContext) -> None:
    a, b = await make_agent(desk, "amy", "agent"), await make_agent(desk, "bob", "agent")
    await _team(desk, [a, b], max_open_per_agent=1)
    async with desk.db.transaction() as s:
        await s.execute(update(Agent).where(Agent.id == a).values(availability="offline"))
    inbox = await make_inbox(desk)
    first, second = await _queue(desk, inbox, 2)
    assert (await conv(desk, first)).assignee_id == b
    assert (await conv(desk, second)).assignee_id is None  # bob is full, amy is offline
    async with unit_of_work(desk) as tx:
        await conv_svc.do_set_status(tx, first, b, "resolved")
    (third,) = await _queue(desk, inbox, 1, start=10)
    assert (await conv(desk, third)).assignee_id == b


async def test_reassign_when_an_agent_goes_offline(desk: AppContext, client: Any) -> None:
    a, b = await make_agent(desk, "amy", "agent"), await make_agent(desk, "bob", "agent")
    await _team(desk, [a, b], reassign_on_offline=True)
    inbox = await make_inbox(desk)
    first, second = await _queue(desk, inbox, 2)
    assert {(await conv(desk, first)).assignee_id, (await conv(desk, second)).assignee_id} == {a, b}
    amys = first if (await conv(desk, first)).assignee_id == a else second
    from tests.conftest import login

    headers = await login(client, "amy", "password-123")
    resp = await client.patch("/api/v1/me", json={"availability": "offline"}, headers=headers)
    assert resp.status == 200
    await settle(desk)
    assert (await conv(desk, amys)).assignee_id == b


async def test_no_reassignment_unless_configured(desk: AppContext) -> None:
    a = await make_agent(desk, "amy", "agent")
    await _team(desk, [a])
    inbox = await make_inbox(desk)
    (cid,) = await _queue(desk, inbox, 1)
    from scrm.services.desk.assignment import reassign_from_offline

    async with unit_of_work(desk) as tx:
        assert await reassign_from_offline(tx, a) == []
    assert (await conv(desk, cid)).assignee_id == a


def test_pick_round_robin_wraps_and_skips_full_agents() -> None:
    assert pick_round_robin([3, 1, 2], None, {}, 5) == 1
    assert pick_round_robin([1, 2, 3], 3, {}, 5) == 1
    assert pick_round_robin([1, 2, 3], 1, {2: 5}, 5) == 3
    assert pick_round_robin([1, 2, 3], 1, {1: 5, 2: 5, 3: 5}, 5) is None
    assert pick_round_robin([], None, {}, 5) is None
