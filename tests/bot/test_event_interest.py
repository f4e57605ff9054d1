"""The event log holds only events some consumer will act on (scrm/event_interest.py), and every event is still
pushed live: the bot's own replies are not logged unless a rule, a webhook or a 微信客服 inbox needs them, and a
listener subscribing to something the rule does not declare fails here."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import select, update

from scrm import event_interest as interest
from scrm import events as ev
from scrm.context import AppContext
from scrm.db.models import Contact, Conversation, ConversationLabel, Message
from scrm.db.models_desk import AutomationRule, ConversationStats, WebhookDelivery, WebhookSubscription
from scrm.db.models_events import EventRecord
from scrm.domain import ContactProfile, InboundMessage
from scrm.listeners import install_listeners
from scrm.services.conversations.actions import do_reply
from scrm.services.conversations.ingest import ingest
from scrm.services.desk import automation, webhooks_out
from scrm.services.outbox import enqueue_message
from scrm.services.uow import unit_of_work
from tests.bot.helpers_bot import TUESDAY_MORNING, set_clock, settle
from tests.conftest import api_message, make_agent, make_inbox, post_signed, wait_for


def undeclared(bus: ev.EventBus) -> list[str]:
    """The work subscriptions the rule does not name: (event name, consumer = the listener's module)."""
    wrong = []
    for sub in bus._listeners:  # noqa: SLF001 - the subscriptions as installed
        if sub.everywhere:
            continue
        consumer = str(getattr(sub.listener, "__module__", "")).rpartition(".")[2]
        if sub.name is None or consumer not in interest.CONSUMERS.get(sub.name, {}):
            wrong.append(f"{consumer} on {sub.name or 'every event'}")
    return wrong


async def test_every_work_listener_is_declared_in_the_rule_and_an_undeclared_one_is_caught(ctx: AppContext) -> None:
    unsubscribe = install_listeners(ctx, run_work=False)
    try:
        assert [sub for sub in ctx.bus._listeners if not sub.everywhere]  # noqa: SLF001
        assert undeclared(ctx.bus) == []

        async def reacts(_event: ev.Event) -> None:  # a new listener nobody declared
            return None

        ctx.bus.subscribe(reacts, ev.MESSAGE_CREATED)
        ctx.bus.subscribe(reacts)
        assert undeclared(ctx.bus) == ["test_event_interest on message.created", "test_event_interest on every event"]
    finally:
        for fn in unsubscribe:
            fn()


async def _logged(ctx: AppContext, name: str) -> list[dict[str, Any]]:
    async with ctx.db.session() as s:
        return [dict(p) for p in await s.scalars(select(EventRecord.payload).where(EventRecord.name == name)
                                                 .order_by(EventRecord.id))]


async def _bot_message(ctx: AppContext, cid: int) -> int | None:
    async with ctx.db.session() as s:
        mid = await s.scalar(select(Message.id).where(Message.conversation_id == cid, Message.sender_kind == "bot")
                             .order_by(Message.id).limit(1))
    return None if mid is None else int(mid)


async def _agent_frames(ws: Any, until_sender: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []

    async def read() -> None:
        while True:
            frame = json.loads((await ws.receive()).data)
            if frame.get("type") == "event" and frame["name"] == ev.MESSAGE_CREATED:
                frames.append(frame)
                if frame["data"]["message"]["sender_kind"] == until_sender:
                    return
    await asyncio.wait_for(read(), timeout)
    return frames


async def test_a_bot_answer_reaches_the_agent_screen_live_but_is_not_logged_without_a_rule_or_webhook(
        client: Any, ctx: AppContext, admin_headers: dict[str, str]) -> None:
    automation.invalidate_cache()
    webhooks_out.invalidate_cache()
    set_clock(ctx, TUESDAY_MORNING)
    inbox = await make_inbox(ctx)
    ws = await client.ws_connect("/ws")
    r = await post_signed(client, inbox.id, api_message("q-1", sender="buyer", text="运费怎么收？"))
    assert r.status == 200
    cid = int((await r.json())["results"][0]["conversation_id"])
    frames = await _agent_frames(ws, "bot")  # the agent watching the inbox sees the bot's answer appear
    await ws.close()
    await settle(ctx)
    bot_mid = await _bot_message(ctx, cid)
    assert bot_mid is not None and bot_mid in [f["data"]["message"]["id"] for f in frames]
    logged = await _logged(ctx, ev.MESSAGE_CREATED)
    assert [m["sender_kind"] for m in logged if m["conversation_id"] == cid] == ["contact"]  # the customer's only
    assert not [m for m in logged if m["message_id"] == bot_mid]


async def test_with_a_rule_or_a_webhook_on_message_created_the_bot_answer_is_logged_and_both_act_on_it(
        client: Any, ctx: AppContext) -> None:
    set_clock(ctx, TUESDAY_MORNING)
    inbox = await make_inbox(ctx)
    rule = automation.parse_rule({"name": "tag bot replies", "event": "message.created",
                                  "conditions": {"direction": "out"},
                                  "actions": [{"type": "add_label", "label": "answered"}]})
    async with ctx.db.transaction() as s:
        s.add(AutomationRule(**rule.model_dump(mode="json", exclude={"conditions"}),
                             conditions=rule.conditions.model_dump(mode="json", exclude_none=True)))
        s.add(WebhookSubscription(name="crm", url="https://crm.example/hook", events=["message.created"],
                                  secret="s" * 32, active=True))
    automation.invalidate_cache()  # as the admin API does when it saves them
    webhooks_out.invalidate_cache()
    r = await post_signed(client, inbox.id, api_message("q-2", sender="buyer2", text="运费怎么收？"))
    cid = int((await r.json())["results"][0]["conversation_id"])
    bot_mid = await wait_for(lambda: _bot_message(ctx, cid), timeout=10)
    await settle(ctx)
    assert [m for m in await _logged(ctx, ev.MESSAGE_CREATED) if m["message_id"] == bot_mid]
    async with ctx.db.session() as s:
        labels = list(await s.scalars(select(ConversationLabel.label).where(ConversationLabel.conversation_id == cid)))
        hooked = [d.payload["data"]["message_id"] for d in await s.scalars(select(WebhookDelivery))]
    assert labels == ["answered"]  # the rule ran on the bot's message
    assert bot_mid in hooked  # and the integrator is told about it


async def _customer(ctx: AppContext, channel: str, sender: str) -> tuple[int, Any]:
    inbox = await make_inbox(ctx, channel, name=channel)
    [outcome] = await ingest(ctx, inbox, [InboundMessage(f"{sender}-1", sender, "hello",
                                                         profile=ContactProfile(name=sender))])
    await ctx.bus.drain(5)
    return int(outcome.conversation_id), inbox


async def _answer(ctx: AppContext, cid: int, inbox: Any, sender_kind: str) -> int:
    from scrm.services.conversations import actions

    async with unit_of_work(ctx) as tx:
        conv, inbox, identity = await actions.load(tx, cid)
        message, _ = await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity,
                                           sender_kind=sender_kind, text="an answer", automatic=True)
        mid = int(message.id)
    await ctx.bus.drain(5)
    return mid


async def test_a_bot_reply_on_wecom_kf_in_human_hands_is_logged_and_elsewhere_is_only_pushed(ctx: AppContext) -> None:
    automation.invalidate_cache()
    webhooks_out.invalidate_cache()
    live: list[ev.Event] = []

    async def watch(event: ev.Event) -> None:
        live.append(event)

    ctx.bus.subscribe(watch, ev.MESSAGE_CREATED, everywhere=True)
    kf_cid, kf_inbox = await _customer(ctx, "wecom_kf", "kf-buyer")
    api_cid, api_inbox = await _customer(ctx, "api", "api-buyer")
    kf_bot_mid = await _answer(ctx, kf_cid, kf_inbox, "bot")  # while the bot has it: no 微信客服 reply code
    async with ctx.db.transaction() as s:
        await s.execute(update(Conversation).where(Conversation.id == kf_cid).values(handler="human"))
    kf_mid = await _answer(ctx, kf_cid, kf_inbox, "bot")  # in 人工: takes the one reply the code allows
    api_mid = await _answer(ctx, api_cid, api_inbox, "bot")
    logged = {m["message_id"] for m in await _logged(ctx, ev.MESSAGE_CREATED)}
    assert kf_mid in logged and kf_bot_mid not in logged and api_mid not in logged
    await wait_for(lambda: {kf_mid, kf_bot_mid, api_mid} <= {e.data["message_id"] for e in live}, timeout=5)


async def test_a_publish_that_logged_nothing_wakes_no_consumer(ctx: AppContext) -> None:
    automation.invalidate_cache()
    webhooks_out.invalidate_cache()
    cid, inbox = await _customer(ctx, "api", "quiet")
    woken: list[bool] = []
    publish = ctx.bus.publish

    async def spy(events: Any, *, wake: bool = True) -> None:
        woken.append(wake)
        await publish(events, wake=wake)

    ctx.bus.publish = spy  # type: ignore[method-assign]
    await _answer(ctx, cid, inbox, "bot")  # message.created, outbox.enqueued, conversation.updated: none logged
    agent = await make_agent(ctx, "ann", "agent")
    async with unit_of_work(ctx) as tx:
        await do_reply(tx, cid, agent, "a person answers")  # the desk's SLA clock: logged
    assert woken == [False, True]


async def test_customer_and_agent_messages_still_drive_the_desk(client: Any, ctx: AppContext) -> None:
    automation.invalidate_cache()
    webhooks_out.invalidate_cache()
    inbox = await make_inbox(ctx)
    agent = await make_agent(ctx, "bea", "agent")
    r = await post_signed(client, inbox.id, api_message("h-1", sender="asker", text="我要人工"))
    cid = int((await r.json())["results"][0]["conversation_id"])
    await settle(ctx)
    async with unit_of_work(ctx) as tx:
        await do_reply(tx, cid, agent, "我来帮您")
    await settle(ctx)
    kinds = [(m["direction"], m["sender_kind"]) for m in await _logged(ctx, ev.MESSAGE_CREATED)
             if m["conversation_id"] == cid and not m.get("private")]
    assert ("in", "contact") in kinds and ("out", "agent") in kinds
    async with ctx.db.session() as s:
        stats = await s.get(ConversationStats, cid)
    assert stats is not None and stats.first_response_at is not None  # the agent's answer stopped the clock


async def test_a_new_customer_is_pushed_live_and_logged_only_while_a_webhook_wants_contacts(ctx: AppContext) -> None:
    automation.invalidate_cache()
    webhooks_out.invalidate_cache()
    live: list[ev.Event] = []

    async def watch(event: ev.Event) -> None:
        live.append(event)

    ctx.bus.subscribe(watch, ev.CONTACT_UPDATED, everywhere=True)
    from scrm.listeners.desk import install

    install(ctx)  # the desk listener queues outgoing webhooks
    await _customer(ctx, "api", "first")
    assert await _logged(ctx, ev.CONTACT_UPDATED) == []
    async with ctx.db.transaction() as s:
        s.add(WebhookSubscription(name="crm", url="https://crm.example/hook", events=["contact.updated"],
                                  secret="s" * 32, active=True))
    webhooks_out.invalidate_cache()
    await _customer(ctx, "api", "second")
    async with ctx.db.session() as s:
        second = await s.scalar(select(Contact.id).where(Contact.name == "second"))
        hooked = [d.payload["data"].get("contact_id") for d in await s.scalars(select(WebhookDelivery))]
    logged = await _logged(ctx, ev.CONTACT_UPDATED)
    assert {p["contact_id"] for p in logged} == {second} and [p for p in logged if p.get("created")]
    assert set(hooked) == {second}
    await wait_for(lambda: len([e for e in live if e.data.get("created")]) == 2, timeout=5)


async def test_a_handoff_logs_its_handler_change_and_only_pushes_the_conversation_update(ctx: AppContext) -> None:
    from scrm.services.conversations.actions import do_set_handler

    live: list[ev.Event] = []

    async def watch(event: ev.Event) -> None:
        live.append(event)

    ctx.bus.subscribe(watch, ev.CONVERSATION_UPDATED, everywhere=True)
    cid, _ = await _customer(ctx, "api", "handed")
    async with unit_of_work(ctx) as tx:
        await do_set_handler(tx, cid, None, "queue", reason="asked for a person")
    await ctx.bus.drain(5)
    assert [p["handler"] for p in await _logged(ctx, ev.CONVERSATION_HANDLER_CHANGED)] == ["queue"]
    assert [p for p in await _logged(ctx, ev.CONVERSATION_UPDATED) if p["conversation_id"] == cid] == []
    await wait_for(lambda: [e for e in live if e.data.get("changed") == ["handler"]], timeout=5)


async def test_a_consumer_batch_that_logged_nothing_wakes_no_other_consumer(ctx: AppContext) -> None:
    """A batch whose listeners only emitted live pushes (the bot's answer, typing) publishes them without a
    wake-up: with Redis every other worker's consumer would otherwise run a claim that finds nothing."""
    automation.invalidate_cache()
    webhooks_out.invalidate_cache()
    cid, _inbox = await _customer(ctx, "api", "batch")
    worked: list[int] = []

    async def step(event: ev.Event) -> None:
        async with unit_of_work(ctx) as tx:
            tx.emit(ev.TYPING, conversation_id=cid, who="bot")  # live only
            if event.data.get("n") == 2:
                tx.emit("test.follow_up", conversation_id=cid)  # a name the rule does not know: logged
        worked.append(int(event.data["n"]))

    ctx.bus.subscribe(step, "test.step")
    woken: list[tuple[list[str], bool]] = []
    publish = ctx.bus.publish

    async def spy(events: Any, *, wake: bool = True) -> None:
        woken.append(([e.name for e in events], wake))
        await publish(events, wake=wake)

    ctx.bus.publish = spy  # type: ignore[method-assign]
    for n in (1, 2):  # one batch each
        async with unit_of_work(ctx) as tx:
            tx.emit("test.step", conversation_id=cid, n=n)
        await wait_for(lambda n=n: n in worked, timeout=10)
        await wait_for(lambda n=n: len([w for w in woken if ev.TYPING in w[0]]) >= n, timeout=10)
    assert ([ev.TYPING], False) in woken
    assert ([ev.TYPING, "test.follow_up"], True) in woken
