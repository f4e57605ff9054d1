"""What goes into the flow engine (BotInput) and what comes out (actions).

The engine is pure: the application turns every action into database writes and outbox rows, and
feeds asynchronous outcomes (an HTTP answer, a timer) back as a new BotInput.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from scrm.domain import Choice

InputKind = Literal["message", "postback", "http_result", "timeout"]


@dataclass(frozen=True)
class BotInput:
    """One event for the bot: a customer message or button click, an HTTP answer, or a timer.

    - `now` is an aware datetime (UTC); the engine never reads the clock.
    - `choice` is the button / menu payload of a postback.
    - `contact` is {"name": str | None, "language": str | None, "attributes": {...}, "tags": [...]}.
    - `business_hours_open` is computed by the application (BusinessHours.is_open(now)).
    - `data`: for "http_result" {"request_id", "status", "json"} (status 0 = network error or timeout);
      for "timeout" {"token"} as given by ScheduleTimeout.
    """

    kind: InputKind
    now: datetime
    text: str | None = None
    choice: str | None = None
    is_first_message: bool = False
    channel_has_buttons: bool = True
    contact: Mapping[str, Any] = field(default_factory=dict)
    business_hours_open: bool = True
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendReply:
    """Send a bot message; choices become buttons, or numbered text where the channel has none.

    `faq` says how the FAQ produced this reply, for reports (not part of equality):
    {"outcome": "answer" | "picked" | "clarify" | "reject" | "none", "entry": id, "entries": [ids],
    "confidence": 0..1}. "picked" is a candidate the customer chose after a "clarify".
    """

    text: str
    choices: tuple[Choice, ...] = ()
    faq: Mapping[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SetAttribute:
    """Store a value on the contact (`contact.attributes[key]`)."""

    key: str
    value: Any


@dataclass(frozen=True)
class AddTag:
    """Tag the contact."""

    tag: str


@dataclass(frozen=True)
class OpenTicket:
    """Create a ticket for this conversation.

    Replies emitted after it in the same result may contain `{ticket_number}`: the application
    substitutes the number of the ticket it just created before queueing them.
    """

    subject: str
    description: str
    priority: str = "normal"
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Handoff:
    """Move the conversation from the bot to the agent queue; `message` is sent to the customer.

    After this the application keeps the bot silent until an agent hands the conversation back.
    """

    reason: str
    message: str


@dataclass(frozen=True)
class CallHttp:
    """Call an HTTP endpoint; the application answers with BotInput(kind="http_result",
    data={"request_id": request_id, "status": int, "json": ...})."""

    request_id: str
    method: str
    url: str
    json_body: Any = None
    timeout: float = 10.0


@dataclass(frozen=True)
class RecordUnanswered:
    """Keep a question the bot could not answer, for the knowledge-base admins (`faq` as on SendReply)."""

    text: str
    faq: Mapping[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ScheduleTimeout:
    """Feed BotInput(kind="timeout", data={"token": token}) after `seconds` unless the customer
    writes first (a stale timer is ignored by the engine, so cancelling is optional)."""

    seconds: float
    token: str = ""


Action = SendReply | SetAttribute | AddTag | OpenTicket | Handoff | CallHttp | RecordUnanswered | ScheduleTimeout


@dataclass(frozen=True)
class BotResult:
    """The engine's answer: the new JSON-serializable state to persist and the actions to perform."""

    state: dict[str, Any]
    actions: list[Action]
