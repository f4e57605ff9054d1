"""Which consumers may act on an event: the one rule that decides whether it is logged.

Every logged event costs the busiest processes work (inserted, claimed, dispatched, pruned, its index
entries churned), so the event log holds only events some work listener will act on; the others are still
pushed live (agents' screens, web chat sockets, Redis fan-out), just not written to `events`.

The decision must hold in every process: `scrm serve --no-worker` logs events that `scrm worker` works, so
it never asks which listeners happen to be installed here. It is, per event name, each consumer (named by its
listener module under scrm/listeners) with a pure test over the event's data and a snapshot of what the
database says listens beyond the code (`Listening`: automation rules, outgoing webhooks, inboxes that turn on
optional work). A listener subscribing to an event name, or from a module, that this table does not name
fails tests/core/test_event_interest.py: declare it here first. Names the table does not know are logged.

How stale the snapshot may be: it is read from the caches the consumers use themselves (automation rules
and outgoing webhooks 5 s, dropped at once in the process that saves them; active inboxes 2 s), when an
event is emitted. An event emitted in another process up to that long after an admin adds a rule or a
webhook may be left unlogged, and the new rule or webhook then does not act on it (it acts on what follows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from scrm import events as ev

LISTENING_FACT = "event_interest.listening"  # a consumer batch's snapshot, in its SharedTransaction.facts


@dataclass(frozen=True)
class Listening:
    """What the database says listens to events beyond the code's own consumers (a snapshot of cached reads)."""

    rules: frozenset[str] = frozenset()  # event names an active automation rule runs on
    webhooks: frozenset[str] = frozenset()  # event names an active outgoing webhook subscribes to
    unionid_links: bool = False  # an active WeChat OA inbox links new followers by UnionID (settings.link_unionid)
    wecom_contacts: bool = False  # an active WeCom contacts inbox pushes contact labels to corp tags
    everything: bool = False  # no snapshot at hand: assume every rule, webhook and inbox (log when in doubt)

    def rule(self, name: str) -> bool:
        return self.everything or name in self.rules

    def webhook(self, name: str) -> bool:
        return self.everything or name in self.webhooks


ANY = Listening(everything=True)
Test = Callable[[ev.Event, Listening], bool]


def always(_event: ev.Event, _listening: Listening) -> bool:
    return True


# -- Pure tests over an event's data (the listeners' own early returns, in one place) --------------------------

def inbound(event: ev.Event, _listening: Listening = ANY) -> bool:
    """A message that came in from the channel (media downloads: listeners/media.py)."""
    return event.data.get("direction") == "in"


def opt_out_candidate(event: ev.Event, _listening: Listening = ANY) -> bool:
    """An inbound message a person wrote (opt-out keywords, broadcast replies: listeners/optout.py)."""
    return event.data.get("direction") == "in" and not event.data.get("auto_submitted")


def bot_answers(event: ev.Event, _listening: Listening = ANY) -> bool:
    """A customer's message while the bot handled the conversation (listeners/bot.py)."""
    d = event.data
    return (d.get("direction") == "in" and d.get("sender_kind") == "contact" and not d.get("auto_submitted")
            and d.get("handler", "bot") == "bot")


def desk_books(event: ev.Event, _listening: Listening = ANY) -> bool:
    """Whether the desk's own bookkeeping (SLA clocks, CSAT) acts on the event: a new message counts only
    when a customer wrote it or an agent answered (bot replies, system messages and notes move no clock)."""
    if event.name == ev.CONVERSATION_UPDATED:  # only a priority change re-picks the SLA (no list: unknown)
        return "priority" in (event.data.get("changed") or ("priority",))
    if event.name != ev.MESSAGE_CREATED:
        return True
    d = event.data
    return not d.get("private") and (d.get("direction"), d.get("sender_kind")) in (("in", "contact"), ("out", "agent"))


def notifies(event: ev.Event, _listening: Listening = ANY) -> bool:
    """Which events can notify an agent (listeners/notifications.py)."""
    d = event.data
    if event.name == ev.CONVERSATION_ASSIGNED:
        return bool(d.get("assignee_id")) and d.get("by") != d.get("assignee_id")
    if event.name == ev.MESSAGE_CREATED:
        return (d.get("direction") == "in" and d.get("sender_kind") == "contact" and d.get("handler") != "bot"
                and not d.get("auto_submitted"))
    if event.name == ev.CONVERSATION_STATUS_CHANGED:
        return d.get("by") == "snooze"
    return event.name in SLA_EVENTS


def wecom_kf_reply(event: ev.Event, _listening: Listening = ANY) -> bool:
    """A message the API sends in a 微信客服 conversation in 人工 takes the one reply its code allows; one queued
    while the bot or the queue had the conversation takes none (listeners/wecom.py)."""
    d = event.data
    return (d.get("channel") == "wecom_kf" and d.get("direction") == "out" and not d.get("private")
            and d.get("sender_kind") in ("agent", "bot", "system") and d.get("handler") not in ("bot", "queue"))


def wecom_state(event: ev.Event, _listening: Listening = ANY) -> bool:
    """The outcome of a WeCom session-state change or welcome code (listeners/wecom.py)."""
    return event.data.get("kind") in ("wecom_state", "wecom_code")


def wecom_contact(event: ev.Event, listening: Listening) -> bool:
    """A new person an OA inbox links by UnionID, or a label change a WeCom contacts inbox pushes (listeners/wecom.py)."""
    d = event.data
    if d.get("created"):
        return listening.everything or listening.unionid_links
    return (d.get("change") in (None, "tag", "merged") and "imported" not in d
            and (listening.everything or listening.wecom_contacts))


def desk(books: Test | None = None) -> Test:
    """The desk listener: its own bookkeeping (`books`), else an automation rule or an outgoing webhook on the event."""
    def test(event: ev.Event, listening: Listening) -> bool:
        return (books is not None and books(event, listening)) or listening.rule(event.name) or listening.webhook(event.name)
    return test


SLA_EVENTS = ("sla.warning", "sla.breached")

# Event name -> {consumer (its listener module): when it may act}. An empty entry: pushed live only.
CONSUMERS: Mapping[str, Mapping[str, Test]] = {
    ev.MESSAGE_CREATED: {"media": inbound, "optout": opt_out_candidate, "bot": bot_answers,
                         "desk": desk(desk_books), "notifications": notifies, "wecom": wecom_kf_reply},
    ev.MESSAGE_UPDATED: {"desk": desk()},  # media stored, a delivery's outcome: outgoing webhooks only
    ev.DELIVERY_UPDATED: {"desk": desk(), "wecom": wecom_state},
    ev.CONVERSATION_CREATED: {"desk": desk(always), "wecom": always},  # the stats row, SLA clock; 微信客服 state
    ev.CONVERSATION_UPDATED: {"desk": desk(desk_books)},
    ev.CONVERSATION_STATUS_CHANGED: {"desk": desk(always), "notifications": notifies, "wecom": always},
    ev.CONVERSATION_ASSIGNED: {"desk": desk(always), "notifications": notifies},
    ev.CONVERSATION_HANDLER_CHANGED: {"desk": desk(always), "wecom": always},
    ev.CONTACT_UPDATED: {"desk": desk(), "wecom": wecom_contact},
    ev.TICKET_OPENED: {"desk": desk(always)},
    "ticket.updated": {"desk": desk()},
    "sla.warning": {"desk": desk(), "notifications": notifies},
    "sla.breached": {"desk": desk(), "notifications": notifies},
    "csat.answered": {"desk": desk()},
    "agent.updated": {"desk": desk(always)},  # reassignment when an agent goes offline or away
    # Live only: they update screens and wake processes.
    ev.OUTBOX_ENQUEUED: {}, ev.FAQ_CHANGED: {}, ev.TYPING: {}, "notification.created": {}, "notification.read": {},
}


def logged(event: ev.Event, listening: Listening = ANY) -> bool:
    """Whether some consumer may act on the event, so it is written to the event log."""
    consumers = CONSUMERS.get(event.name)
    if consumers is None:
        return True  # unknown to the rule: logged (a listener of it fails the test until it is declared)
    return any(test(event, listening) for test in consumers.values())


def live_only(event: ev.Event) -> bool:
    """Never logged, whatever rules, webhooks and inboxes exist: no consumer acts on it."""
    return not logged(event, ANY)
