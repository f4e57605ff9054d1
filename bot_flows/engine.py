"""The flow engine: (conversation state, BotInput) -> (new state, actions). Pure and deterministic.

The state is a JSON-serializable dict the application persists per conversation, so a restart in
the middle of a flow continues where it was. Processing order for a message or button click:
numbered-choice reply -> the current state's transitions -> global flow triggers (unless the state
is not interruptible) -> the state's waiting step (collect / faq) -> the fallback.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot_flows.actions import (
    Action,
    AddTag,
    BotInput,
    BotResult,
    CallHttp,
    Handoff,
    OpenTicket,
    RecordUnanswered,
    ScheduleTimeout,
    SendReply,
    SetAttribute,
)
from bot_flows.conditions import (
    DEFAULT_ORDER_NUMBER,
    BusinessHours,
    MatchContext,
    detect_language,
    format_when,
    make_regex_validator,
    matches,
    normalize_text,
    validate_email,
    validate_phone,
    validate_text,
)
from bot_flows.faq_lookup import FaqCandidate, FaqLookup, FaqMatch, MatcherLookup
from bot_flows.flow_model import END, ActionSpec, ChoiceSpec, FlowSet, State, Text, Transition
from scrm.domain import Choice

__all__ = ["EngineConfig", "FaqCandidate", "FaqLookup", "FaqMatch", "FlowEngine", "MatcherLookup"]
STATE_VERSION = 1
_NOT_UNDERSTOOD = Text("抱歉，我没有理解您的意思。", "Sorry, I did not understand that.")
_TEMPLATE = re.compile(r"\{([A-Za-z_][\w.]*)(?::(\d+))?\}")


@dataclass(frozen=True)
class EngineConfig:
    default_language: str = "zh"
    business_hours: BusinessHours | None = None  # for "{next_open}" in texts
    order_number_pattern: str = DEFAULT_ORDER_NUMBER
    max_steps: int = 30  # state entries per input: guards against `then` loops


class FlowEngine:
    """Runs declarative flows; see the module docstring for the processing order."""

    def __init__(self, flows: FlowSet, faq: FaqLookup | None = None, config: EngineConfig | None = None) -> None:
        self.flows = flows
        self.faq = faq
        self.config = config or EngineConfig()
        self.validators: dict[str, Callable[[str], str | None]] = {
            "phone": validate_phone, "email": validate_email, "text": validate_text,
            "order_number": make_regex_validator(self.config.order_number_pattern),
        }

    def initial_state(self) -> dict[str, Any]:
        """The state of a conversation the bot has not seen yet."""
        return {"v": STATE_VERSION, "at": self.flows.rest, "lang": None, "retries": 0, "faq_failures": 0,
                "choices": [], "faq_candidates": {}, "faq_question": None, "vars": {}, "http": None,
                "timeout": None, "seq": 0}

    def handle(self, state: dict[str, Any] | None, inp: BotInput) -> BotResult:
        """Process one input; never mutates `state`."""
        run = _Run(self, self._load(state), inp)
        run.process()
        return BotResult(state=run.s, actions=run.actions)

    def _load(self, state: dict[str, Any] | None) -> dict[str, Any]:
        fresh = self.initial_state()
        if not state or state.get("v") != STATE_VERSION:
            return fresh
        s = {**fresh, **_copied(state)}
        flow, _, name = str(s["at"]).partition(":")
        if flow not in self.flows.flows or name not in self.flows.flows[flow].states:
            s.update(at=self.flows.rest, retries=0, http=None, timeout=None, vars={})  # flows were edited
        return s


def _copied(value: Any) -> Any:
    """A deep copy of a stored state (JSON: dicts, lists and scalars), several times faster than
    copy.deepcopy; anything else is copied with deepcopy."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return copy.deepcopy(value)


class _Run:
    """One handle() call: the working state, the actions so far and the input's context."""

    def __init__(self, engine: FlowEngine, state: dict[str, Any], inp: BotInput) -> None:
        self.e, self.s, self.inp = engine, state, inp
        self.actions: list[Action] = []
        self.steps = 0
        contact = inp.contact or {}
        self.attrs: dict[str, Any] = dict(contact.get("attributes") or {})
        is_msg = inp.kind in ("message", "postback")
        self.text = (inp.text or "") if is_msg else ""
        self.payload = inp.choice if is_msg else None
        lang = contact.get("language") or self.attrs.get("language")
        self.lang = detect_language(self.text, lang, state.get("lang"), engine.config.default_language)
        self.s["lang"] = self.lang
        self._match: Any = None
        self._matched = False

    # entry points

    def process(self) -> None:
        kind = self.inp.kind
        if kind == "timeout":
            self.on_timeout()
        elif kind == "http_result":
            self.on_http()
        else:
            self.s["timeout"] = None  # the customer spoke: any pending timer is stale
            self.resolve_choice()
            self.on_input()
            self.arm_timeout()

    def resolve_choice(self) -> None:
        """'2' or a choice's exact label picks one of the choices offered last (numbered text)."""
        offered = self.s.get("choices") or []
        self.s["choices"] = []
        if self.payload or not self.text or not offered:
            return
        said = normalize_text(self.text).strip().rstrip(".。、")
        if said.isdigit() and 1 <= int(said) <= len(offered):
            self.payload = offered[int(said) - 1][1]
            return
        for label, payload in offered:
            if said == normalize_text(label).strip():
                self.payload = payload
                return

    def on_input(self) -> None:
        cur = self.current()
        ctx = self.context()
        local = [(None, t) for t in cur.transitions]
        found = _first(local, ctx, self.payload)
        if found is None and cur.interruptible:
            found = _first(self.e.flows.triggers(), ctx, self.payload)
        if found is None:
            return self.wait_step(cur)
        flow, t = found
        self.follow(t, f"{flow.name}:{flow.start}" if flow else None)

    def wait_step(self, cur: State) -> None:
        if cur.collect:
            self.do_collect(cur)
        elif cur.faq:
            self.do_faq(cur)
        else:
            self.do_fallback(cur)

    def follow(self, t: Transition, default: str | None) -> None:
        self.run_actions(t.actions)
        target = t.goto or default
        if target:
            self.enter(target)
        if t.cont:
            self.wait_step(self.current())

    # states

    def current(self) -> State:
        return self.e.flows.state(self.s["at"])

    def enter(self, ref: str) -> None:
        """Move to a state: run its actions, start its HTTP call / timer, follow its `then`."""
        self.steps += 1
        if self.steps > self.e.config.max_steps:  # a `then` cycle: stop talking, rest
            ref = END
        self.s.update(retries=0, http=None, timeout=None)
        if ref == END:
            self.s.update(at=self.e.flows.rest, vars={})
            return
        self.s["at"] = ref
        st = self.current()
        self.run_actions(st.actions)
        if st.collect and st.collect.prompt:
            self.reply(st.collect.prompt)
        if st.http:
            rid = f"{ref}#{self.next_seq()}"
            self.s["http"] = {"id": rid}
            h = st.http
            self.emit(CallHttp(rid, h.method, self.render(h.url), self.render_json(h.json), h.timeout))
        self.arm_timeout()
        ctx = self.context()
        for route in st.then:
            if matches(route.when, ctx):
                self.run_actions(route.actions)
                if route.goto:
                    self.enter(route.goto)
                return

    def arm_timeout(self) -> None:
        st = self.current()
        if st.timeout is None or self.s.get("timeout"):
            return
        token = f"t{self.next_seq()}"
        due = self.inp.now + timedelta(seconds=st.timeout.seconds)
        self.s["timeout"] = {"token": token, "due": due.isoformat()}
        self.emit(ScheduleTimeout(st.timeout.seconds, token))

    def next_seq(self) -> int:
        self.s["seq"] = int(self.s.get("seq", 0)) + 1
        return int(self.s["seq"])

    def on_timeout(self) -> None:
        pending = self.s.get("timeout")
        token = self.inp.data.get("token")
        if not pending or (token and token != pending["token"]):
            return  # stale timer: the customer answered, or the state changed
        if not token and self.inp.now < datetime.fromisoformat(pending["due"]):
            return
        st = self.current()
        self.s["timeout"] = None
        if st.timeout:
            self.run_actions(st.timeout.actions)
            self.enter(st.timeout.goto)

    def on_http(self) -> None:
        pending = self.s.get("http")
        if not pending or self.inp.data.get("request_id") != pending["id"]:
            return  # an answer for a state we already left
        st = self.current()
        self.s["http"] = None
        status = int(self.inp.data.get("status") or 0)
        body = self.inp.data.get("json")
        self.s["vars"]["_http"] = {"status": status, "json": body}
        if st.http is None:
            return
        if status:
            for b in st.http.branches:
                if b.statuses and not any(_status_is(status, p) for p in b.statuses):
                    continue
                if b.path is not None:
                    found, value = _lookup(body, b.path)
                    if not found or (b.has_equals and value != b.equals) or (not b.has_equals and value is None):
                        continue
                return self.enter(b.goto)
        self.enter(st.http.on_error)

    # waiting steps

    def do_collect(self, st: State) -> None:
        c = st.collect
        assert c is not None
        value, kind = None, None
        for v in c.validators:
            check = make_regex_validator(c.pattern or ".+") if v == "regex" else self.e.validators[v]
            value = check(self.text) if self.text else None
            if value is not None:
                kind = v
                break
        if value is None or kind is None:
            self.s["retries"] = int(self.s.get("retries", 0)) + 1
            if self.s["retries"] >= c.max_attempts:
                return self.enter(c.on_fail)
            return self.reply(c.invalid or c.prompt or _NOT_UNDERSTOOD)
        if c.var:
            self.s["vars"][c.var] = value
        attr = c.attribute.get(kind) or c.attribute.get("*")
        if attr:
            self.attrs[attr] = value
            self.emit(SetAttribute(attr, value))
        self.enter(c.next)

    def do_faq(self, st: State) -> None:
        f = st.faq
        assert f is not None
        offered = self.s.get("faq_candidates") or {}
        self.s["faq_candidates"] = {}
        if self.payload and self.payload.startswith("faq:"):
            picked = self.payload[4:]
            if picked == "none":
                return self.faq_failed(st, self.s.get("faq_question") or self.text, {"outcome": "none"})
            if picked in offered:
                self.s["faq_failures"] = 0
                ans = offered[picked]
                return self.reply(ans["answer"], tuple(Choice(lb, p) for lb, p in ans["buttons"]),
                                  faq={"outcome": "picked", "entry": picked, "confidence": ans.get("confidence")})
        question = self.text.strip()
        if not question or (self.payload and question == self.payload):
            return self.do_fallback(st)
        result = self.faq_match()
        if result is None or result.decision == "reject" or not result.candidates:
            best = result.outcome_confidence() if result else None
            return self.faq_failed(st, question, {"outcome": "reject", "confidence": best})
        if result.decision == "answer":
            self.s["faq_failures"] = 0
            top = result.candidates[0]
            return self.reply(top.answer, tuple(_as_choice(b) for b in top.buttons),
                              faq={"outcome": "answer", "entry": top.entry_id,
                                   "confidence": result.outcome_confidence()})
        shown = result.candidates[: f.max_choices]
        self.s["faq_candidates"] = {
            c.entry_id: {"answer": c.answer, "buttons": [[ch.label, ch.payload] for ch in map(_as_choice, c.buttons)],
                         "confidence": c.confidence}
            for c in shown}
        self.s["faq_question"] = question
        choices: list[Choice | ChoiceSpec] = [Choice(c.question, f"faq:{c.entry_id}") for c in shown]
        if f.none_of_these:
            choices.append(ChoiceSpec(f.none_of_these, "faq:none"))
        self.reply(f.clarify, tuple(choices), faq={"outcome": "clarify", "entries": [c.entry_id for c in shown],
                                                   "confidence": result.outcome_confidence()})

    def faq_failed(self, st: State, question: str, faq: dict[str, Any] | None = None) -> None:
        # The same `faq` dict goes on RecordUnanswered and on the reply: the application records
        # the outcome once per dict, whether or not a reply follows (a fail limit may hand off).
        f = st.faq
        assert f is not None
        if question:
            self.emit(RecordUnanswered(question, faq=faq))
        self.s["faq_failures"] = int(self.s.get("faq_failures", 0)) + 1
        if f.on_fail_limit and self.s["faq_failures"] >= f.fail_limit:
            self.s["faq_failures"] = 0
            return self.enter(f.on_fail_limit)
        self.reply(f.not_found, f.not_found_choices, faq=faq)

    def faq_match(self) -> FaqMatch | None:
        if not self._matched:
            self._matched = True
            text = self.text.strip()
            self._match = self.e.faq.match(text) if self.e.faq and text else None
        return self._match  # type: ignore[no-any-return]

    def top_intent(self) -> str | None:
        result = self.faq_match()
        if result and result.decision == "answer" and result.candidates:
            return result.candidates[0].entry_id
        return None

    def do_fallback(self, st: State) -> None:
        flow = self.e.flows.flows[self.s["at"].partition(":")[0]]
        fb = st.fallback or flow.fallback
        if fb is None:
            return self.reply(_NOT_UNDERSTOOD)
        self.s["retries"] = int(self.s.get("retries", 0)) + 1
        over = fb.max_retries is not None and self.s["retries"] > fb.max_retries
        if fb.then and (over or not fb.reply):
            return self.enter(fb.then)
        if fb.reply:
            self.reply(fb.reply, fb.choices)

    # output

    def context(self) -> MatchContext:
        return MatchContext(text=normalize_text(self.text), payload=self.payload,
                            is_first_message=self.inp.is_first_message,
                            business_hours_open=self.inp.business_hours_open,
                            attributes=self.attrs, intent=self.top_intent)

    def emit(self, action: Action) -> None:
        self.actions.append(action)

    def reply(self, text: Text | str, choices: Sequence[Choice | ChoiceSpec] = (),
              faq: dict[str, Any] | None = None) -> None:
        body = self.render(text.get(self.lang) if isinstance(text, Text) else text)
        shown = tuple(c if isinstance(c, Choice) else Choice(self.render(c.label.get(self.lang)), c.payload)
                      for c in choices)
        self.emit(SendReply(body, shown, faq))
        if shown:
            self.s["choices"] = [[c.label, c.payload] for c in shown]

    def run_actions(self, specs: Sequence[ActionSpec]) -> None:
        for a in specs:
            args, r = a.args, self.render
            if a.kind == "reply":
                self.reply(args["text"])
            elif a.kind == "ask":
                self.reply(args["text"], args["choices"])
            elif a.kind == "set_attribute":
                value = r(args["value"]) if isinstance(args["value"], str) else args["value"]
                self.attrs[args["key"]] = value
                self.emit(SetAttribute(args["key"], value))
            elif a.kind == "add_tag":
                self.emit(AddTag(r(args["tag"])))
            elif a.kind == "open_ticket":
                self.emit(OpenTicket(r(args["subject"]), r(args["description"]), args["priority"],
                                     self.render_json(args["fields"])))
            elif a.kind == "handoff":
                self.s["faq_failures"] = 0
                self.emit(Handoff(r(args["reason"]), r(args["message"].get(self.lang))))
            elif a.kind == "record_unanswered":
                self.emit(RecordUnanswered(r(args["text"])))
            elif a.kind == "set_var":
                self.s["vars"].update({k: r(v) if isinstance(v, str) else v for k, v in args.items()})

    def render(self, template: str) -> str:
        """Fill {name}, {message}, {attr.x}, {var.x}, {http.status}, {http.json.a.b}, {next_open};
        '{x:40}' cuts to 40 characters; unknown placeholders (e.g. {ticket_number}) stay as they are."""

        def fill(m: re.Match[str]) -> str:
            found, value = self.lookup(m.group(1))
            if not found:
                return m.group(0)
            out = "" if value is None else str(value)
            limit = int(m.group(2)) if m.group(2) else None
            return out if limit is None or len(out) <= limit else out[: limit - 1] + "…"

        return _TEMPLATE.sub(fill, template)

    def render_json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.render(value)
        if isinstance(value, dict):
            return {k: self.render_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render_json(v) for v in value]
        return value

    def lookup(self, name: str) -> tuple[bool, Any]:
        head, _, rest = name.partition(".")
        contact = self.inp.contact or {}
        if name == "name":
            return True, contact.get("name") or ""
        if name == "message":
            return True, self.text
        if name == "next_open":
            return True, self.next_open_text()
        if head == "attr" and rest:
            return True, self.attrs.get(rest, "")
        if head == "var" and rest:
            return True, self.s["vars"].get(rest, "")
        if head == "http" and rest:
            return _lookup(self.s["vars"].get("_http"), rest)
        return False, None

    def next_open_text(self) -> str:
        hours = self.e.config.business_hours
        when = hours.next_open(self.inp.now) if hours else None
        if when is None:
            return "工作时间" if self.lang == "zh" else "during business hours"
        return format_when(when, self.lang, self.inp.now)


def _first(routes: Sequence[tuple[Any, Transition]], ctx: MatchContext,
           payload: str | None) -> tuple[Any, Transition] | None:
    """The first matching route; with a button payload, routes testing payloads go first, so a
    click on "Wait for an agent" is not taken for the keyword "agent"."""
    if payload:
        routes = sorted(routes, key=lambda r: not r[1].when.payload)
    return next((r for r in routes if matches(r[1].when, ctx)), None)


def _as_choice(button: Any) -> Choice:
    if isinstance(button, Choice):
        return button
    if isinstance(button, dict):
        return Choice(str(button.get("label", "")), str(button.get("payload", button.get("url", ""))))
    if isinstance(button, list | tuple) and len(button) == 2:
        return Choice(str(button[0]), str(button[1]))
    return Choice(str(button), str(button))


def _status_is(status: int, pattern: str) -> bool:
    return str(status)[0] == pattern[0] if pattern.endswith("xx") else str(status) == pattern


def _lookup(data: Any, path: str) -> tuple[bool, Any]:
    """Follow 'a.b.0.c' through dicts and lists."""
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False, None
    return True, data
