"""Bot flows as data: the flow model and the YAML loader that validates it with file:line errors.

A flow file (config/flows/*.yaml) holds one flow: global `triggers` that enter it, and `states`
with on-enter `actions`, an automatic `then`, at most one waiting step (`collect`, `faq`, `http`),
`transitions` on the next input, a `fallback` with a retry limit and a `timeout`. The header of
config/flows/faq.yaml is the reference. Targets ("goto") are "state", "flow:state" or "end".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot_flows.conditions import DEFAULT_ORDER_NUMBER, Condition
from bot_flows.intents import compile_phrase

END = "end"


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A bilingual text; a plain YAML string serves both languages."""

    zh: str
    en: str

    def get(self, lang: str) -> str:
        """The text in `lang` ('zh' or 'en')."""
        return self.zh if lang == "zh" else self.en


@dataclass(frozen=True)
class ChoiceSpec:
    label: Text
    payload: str


@dataclass(frozen=True)
class ActionSpec:
    kind: str  # reply | ask | set_attribute | add_tag | open_ticket | handoff | record_unanswered | set_var
    args: Mapping[str, Any]
    line: int


@dataclass(frozen=True)
class Transition:
    """A trigger / transition / `then` route: when `when` holds, run actions and go to `goto`."""

    when: Condition
    actions: tuple[ActionSpec, ...]
    goto: str | None  # qualified "flow:state", END, or None (stay)
    cont: bool  # let the target state handle the same input too
    line: int


@dataclass(frozen=True)
class Collect:
    validators: tuple[str, ...]  # phone | email | order_number | text | regex
    attribute: Mapping[str, str]  # validator -> contact attribute ("*" = any validator)
    var: str | None
    pattern: str | None
    prompt: Text | None
    invalid: Text | None
    max_attempts: int
    next: str
    on_fail: str


@dataclass(frozen=True)
class FaqStep:
    clarify: Text
    none_of_these: Text | None
    not_found: Text
    not_found_choices: tuple[ChoiceSpec, ...]
    fail_limit: int
    on_fail_limit: str | None
    max_choices: int


@dataclass(frozen=True)
class HttpBranch:
    statuses: tuple[str, ...]  # "200", "2xx"; empty = any
    path: str | None
    equals: Any
    has_equals: bool
    goto: str


@dataclass(frozen=True)
class HttpStep:
    method: str
    url: str
    json: Any
    timeout: float
    branches: tuple[HttpBranch, ...]
    on_error: str


@dataclass(frozen=True)
class Fallback:
    reply: Text | None
    choices: tuple[ChoiceSpec, ...]
    max_retries: int | None
    then: str | None


@dataclass(frozen=True)
class Timeout:
    seconds: float
    actions: tuple[ActionSpec, ...]
    goto: str


@dataclass(frozen=True)
class State:
    name: str
    actions: tuple[ActionSpec, ...]
    then: tuple[Transition, ...]
    collect: Collect | None
    faq: FaqStep | None
    http: HttpStep | None
    transitions: tuple[Transition, ...]
    fallback: Fallback | None
    timeout: Timeout | None
    interruptible: bool
    line: int


@dataclass(frozen=True)
class Flow:
    name: str
    file: str
    default: bool
    priority: int
    start: str
    triggers: tuple[Transition, ...]
    states: Mapping[str, State]
    fallback: Fallback | None


@dataclass(frozen=True)
class FlowSet:
    """All flows; `default` is where a conversation rests when no other flow is active."""

    flows: Mapping[str, Flow]
    default: str

    def state(self, ref: str) -> State:
        """The state named by a qualified 'flow:state' reference."""
        flow, _, name = ref.partition(":")
        return self.flows[flow].states[name]

    def triggers(self) -> list[tuple[Flow, Transition]]:
        """Global triggers, highest flow priority first, then file order."""
        ordered = sorted(self.flows.values(), key=lambda f: -f.priority)
        return [(f, t) for f in ordered for t in f.triggers]

    @property
    def rest(self) -> str:
        """The resting state: the default flow's start."""
        return f"{self.default}:{self.flows[self.default].start}"


@dataclass(frozen=True)
class FlowError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class FlowValidationError(ValueError):
    """Raised with every problem found, each as 'file:line: message'."""

    def __init__(self, errors: list[FlowError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


# --- YAML with line numbers ----------------------------------------------------------------------


class MarkedDict(dict[Any, Any]):
    line = 0
    key_lines: dict[Any, int]
    duplicates: list[tuple[Any, int]]


class MarkedList(list[Any]):
    line = 0
    item_lines: list[int] = []  # noqa: RUF012 - replaced per instance by the loader


class _MarkedLoader(yaml.SafeLoader):
    """SafeLoader that records the 1-based line of every mapping, key and list item."""


def _construct_map(loader: _MarkedLoader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)
    out = MarkedDict()
    out.line, out.key_lines, out.duplicates = node.start_mark.line + 1, {}, []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in out:
            out.duplicates.append((key, line))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _construct_seq(loader: _MarkedLoader, node: yaml.SequenceNode) -> MarkedList:
    out = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_MarkedLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_MarkedLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


# --- loading -------------------------------------------------------------------------------------


def load_flows(directory: str | Path) -> FlowSet:
    """Load and validate every *.yaml / *.yml file of a directory (sorted by name)."""
    root = Path(directory)
    files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    sources = [(f"{root.name}/{p.name}", p.read_text(encoding="utf-8")) for p in files]
    return load_flow_sources(sources)


def load_flow_sources(sources: list[tuple[str, str]]) -> FlowSet:
    """Validate flows given as (file label, YAML text) pairs; raise FlowValidationError on problems."""
    errors: list[FlowError] = []
    flows: dict[str, Flow] = {}
    refs: list[tuple[str, int, str]] = []
    name_lines: dict[str, tuple[str, int]] = {}
    declared: set[str] = set()
    for label, text in sources:
        try:
            doc = yaml.load(text, Loader=_MarkedLoader)  # noqa: S506 - SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else 1
            errors.append(FlowError(label, line, f"invalid YAML: {exc.problem}"))
            continue
        checker = FileChecker(label)
        flow = checker.flow(doc)
        errors += checker.errors
        refs += checker.refs
        if checker.name:
            declared.add(checker.name)
        if flow is None:
            continue
        if flow.name in flows:
            first = name_lines[flow.name]
            errors.append(FlowError(label, checker.name_line,
                                    f"flow '{flow.name}' is already defined in {first[0]}:{first[1]}"))
            continue
        flows[flow.name] = flow
        name_lines[flow.name] = (label, checker.name_line)
    for label, line, ref in refs:
        if ref == END:
            continue
        flow_name, _, state = ref.partition(":")
        if flow_name not in flows:
            if flow_name in declared:
                continue  # the flow exists but failed validation: its own errors say why
            errors.append(FlowError(label, line, f"unknown flow '{flow_name}' in target '{ref}'"
                                    + _hint(flow_name, flows)))
        elif state not in flows[flow_name].states:
            errors.append(FlowError(label, line, f"unknown state '{state}' in flow '{flow_name}'"
                                    + _hint(state, flows[flow_name].states)))
    defaults = [f.name for f in flows.values() if f.default]
    if not errors and len(defaults) != 1:
        where = sources[0][0] if sources else "flows"
        what = "no flow is marked 'default: true'" if not defaults else \
            f"only one flow may be the default, found {sorted(defaults)}"
        errors.append(FlowError(where, 1, what))
    if errors:
        order = {label: i for i, (label, _) in enumerate(sources)}
        errors.sort(key=lambda e: (order.get(e.file, -1), e.line))
        raise FlowValidationError(errors)
    return FlowSet(flows=flows, default=defaults[0])


def _hint(word: str, options: Mapping[str, Any] | list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --- the schema walker ---------------------------------------------------------------------------

_COND_KEYS = ("keywords", "says", "unless", "exact", "regex", "payload", "intent", "first_message",
              "business_hours", "has_attribute", "any")
_ROUTE_KEYS = (*_COND_KEYS, "actions", "goto", "continue")
_FLOW_KEYS = ("flow", "description", "default", "priority", "start", "triggers", "fallback", "states")
_STATE_KEYS = ("description", "actions", "then", "collect", "faq", "http", "transitions", "fallback",
               "timeout", "interruptible")
_ACTIONS = ("reply", "ask", "set_attribute", "add_tag", "open_ticket", "handoff", "record_unanswered",
            "set_var")
_VALIDATORS = ("phone", "email", "order_number", "text", "regex")
_PRIORITIES = ("low", "normal", "high", "urgent")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_STATUS = re.compile(r"^[1-5](\d\d|xx)$")
_NAME = re.compile(r"^[A-Za-z_][\w-]*$")


class FileChecker:
    """Walks one flow document, building the model and collecting FlowErrors with line numbers."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[FlowError] = []
        self.refs: list[tuple[str, int, str]] = []  # (file, line, qualified target)
        self.name: str | None = None
        self.name_line = 1
        self._flow = ""

    def err(self, line: int, message: str) -> None:
        self.errors.append(FlowError(self.file, line, message))

    # generic shapes

    def mapping(self, node: Any, line: int, what: str) -> MarkedDict | None:
        if isinstance(node, MarkedDict):
            for key, dup_line in node.duplicates:
                self.err(dup_line, f"duplicate key '{key}' in {what}")
            return node
        self.err(line, f"{what} must be a mapping, got {_kind(node)}")
        return None

    def keys(self, node: MarkedDict, allowed: tuple[str, ...], what: str,
             required: tuple[str, ...] = ()) -> None:
        for key in node:
            if key not in allowed:
                hint = _hint(str(key), allowed) or (" (YAML reads on/off/yes/no as booleans: quote it)"
                                                    if isinstance(key, bool) else "")
                self.err(node.key_lines[key], f"unknown key '{key}' in {what}{hint}")
        for key in required:
            if key not in node:
                self.err(node.line, f"{what} is missing required key '{key}'")

    def items(self, node: Any, line: int, what: str) -> list[tuple[Any, int]]:
        if isinstance(node, MarkedList):
            return list(zip(node, node.item_lines, strict=True))
        self.err(line, f"{what} must be a list, got {_kind(node)}")
        return []

    def strings(self, node: Any, line: int, what: str) -> tuple[str, ...]:
        values = [node] if isinstance(node, str | int) and not isinstance(node, bool) else node
        if isinstance(values, list) and values and all(
                isinstance(v, str | int) and not isinstance(v, bool) for v in values):
            return tuple(str(v) for v in values)
        self.err(line, f"{what} must be a string or a non-empty list of strings")
        return ()

    def integer(self, node: Any, line: int, what: str, minimum: int) -> int:
        if isinstance(node, int) and not isinstance(node, bool) and node >= minimum:
            return node
        self.err(line, f"{what} must be an integer >= {minimum}, got {node!r}")
        return minimum

    def text(self, node: Any, line: int, what: str) -> Text:
        if isinstance(node, str):
            return Text(node, node)
        if isinstance(node, MarkedDict) and node and set(node) <= {"zh", "en"} and all(
                isinstance(v, str) for v in node.values()):
            zh, en = node.get("zh"), node.get("en")
            return Text(zh or en or "", en or zh or "")
        self.err(line, f"{what} must be a text or a mapping with 'zh' and/or 'en' texts")
        return Text("", "")

    def target(self, node: Any, line: int, what: str) -> str:
        if not isinstance(node, str) or not node:
            self.err(line, f"{what} must be a state name, 'flow:state' or 'end'")
            return END
        ref = node if (node == END or ":" in node) else f"{self._flow}:{node}"
        self.refs.append((self.file, line, ref))
        return ref

    # the flow

    def flow(self, doc: Any) -> Flow | None:
        """Check a whole document; returns the (possibly partial) flow or None if unusable."""
        root = self.mapping(doc, 1, "a flow file")
        if root is None:
            return None
        self.keys(root, _FLOW_KEYS, "the flow", required=("flow", "start", "states"))
        name = root.get("flow")
        if not isinstance(name, str) or not _NAME.match(name):
            if "flow" in root:
                self.err(root.key_lines["flow"], f"flow name must be an identifier, got {name!r}")
            return None
        self.name, self.name_line, self._flow = name, root.key_lines["flow"], name
        default = root.get("default", False)
        if not isinstance(default, bool):
            self.err(root.key_lines["default"], "'default' must be true or false")
        priority = root.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            self.err(root.key_lines["priority"], "'priority' must be an integer")
            priority = 0
        triggers = tuple(
            self.route(t, ln, "trigger", need_condition=True)
            for t, ln in self.items(root.get("triggers", MarkedList()), root.key_lines.get("triggers", 1),
                                    "'triggers'"))
        fallback = self.fallback(root["fallback"], root.key_lines["fallback"]) if "fallback" in root else None
        states: dict[str, State] = {}
        states_node = self.mapping(root.get("states"), root.key_lines.get("states", root.line), "'states'")
        for sname, snode in (states_node or {}).items():
            sline = states_node.key_lines[sname] if states_node else 1
            if not isinstance(sname, str) or not _NAME.match(sname) or sname == END:
                self.err(sline, f"invalid state name {sname!r}")
                continue
            state = self.state(sname, snode, sline)
            if state:
                states[sname] = state
        start = root.get("start")
        if isinstance(start, str) and states_node is not None and start not in states_node:
            self.err(root.key_lines["start"], f"unknown start state '{start}'{_hint(start, states)}")
        elif "start" in root and not isinstance(start, str):
            self.err(root.key_lines["start"], "'start' must be a state name")
        return Flow(name=name, file=self.file, default=default is True, priority=priority,
                    start=str(start), triggers=triggers, states=states, fallback=fallback)

    def route(self, node: Any, line: int, what: str, *, need_condition: bool) -> Transition:
        m = self.mapping(node, line, f"a {what}")
        if m is None:
            return Transition(Condition(), (), None, False, line)
        self.keys(m, _ROUTE_KEYS, f"a {what}")
        when = self.condition(m, what)
        if need_condition and not any(k in m for k in _COND_KEYS):
            self.err(m.line, f"a {what} needs a condition ({', '.join(_COND_KEYS)})")
        actions = self.actions(m["actions"], m.key_lines["actions"]) if "actions" in m else ()
        goto = self.target(m["goto"], m.key_lines["goto"], "'goto'") if "goto" in m else None
        cont = m.get("continue", False)
        if not isinstance(cont, bool):
            self.err(m.key_lines["continue"], "'continue' must be true or false")
        return Transition(when if not when.is_empty() else Condition(any=True), actions, goto,
                          cont is True, m.line)

    def condition(self, m: MarkedDict, what: str) -> Condition:
        lists = {k: self.strings(m[k], m.key_lines[k], f"'{k}'")
                 for k in ("keywords", "says", "unless", "exact", "payload", "intent", "has_attribute") if k in m}
        for k in ("says", "unless"):
            if any(not compile_phrase(p)[0] for p in lists.get(k, ())):
                self.err(m.key_lines[k], f"'{k}': a phrase has no words or characters to match")
        regex = None
        if "regex" in m:
            try:
                regex = re.compile(str(m["regex"]), re.I)
            except re.error as exc:
                self.err(m.key_lines["regex"], f"bad regex {m['regex']!r}: {exc}")
        for flag in ("first_message", "any"):
            if flag in m and not isinstance(m[flag], bool):
                self.err(m.key_lines[flag], f"'{flag}' must be true or false")
        hours = m.get("business_hours")
        if "business_hours" in m and hours not in ("open", "closed"):
            self.err(m.key_lines["business_hours"], "'business_hours' must be 'open' or 'closed'")
        return Condition(regex=regex, first_message=m.get("first_message") if "first_message" in m else None,
                         business_hours=hours if hours in ("open", "closed") else None,
                         any=m.get("any") is True, **lists)

    def state(self, name: str, node: Any, line: int) -> State | None:
        m = self.mapping(node, line, f"state '{name}'")
        if m is None:
            return None
        what = f"state '{name}'"
        self.keys(m, _STATE_KEYS, what)
        kl = m.key_lines
        waits = [k for k in ("collect", "faq", "http") if k in m]
        if len(waits) > 1:
            self.err(m.line, f"{what} may have only one of collect/faq/http, found {waits}")
        if "then" in m and (waits or "transitions" in m):
            self.err(kl["then"], f"{what}: 'then' moves on at once, so it cannot wait ({waits or 'transitions'})")
        then: tuple[Transition, ...] = ()
        if "then" in m:
            if isinstance(m["then"], str):
                then = (Transition(Condition(any=True), (), self.target(m["then"], kl["then"], "'then'"),
                                   False, kl["then"]),)
            else:
                then = tuple(self.route(r, ln, "'then' route", need_condition=False)
                             for r, ln in self.items(m["then"], kl["then"], "'then'"))
        interruptible = m.get("interruptible", True)
        if not isinstance(interruptible, bool):
            self.err(kl["interruptible"], "'interruptible' must be true or false")
        return State(
            name=name,
            actions=self.actions(m["actions"], kl["actions"]) if "actions" in m else (),
            then=then,
            collect=self.collect(m["collect"], kl["collect"]) if "collect" in m else None,
            faq=self.faq(m["faq"], kl["faq"]) if "faq" in m else None,
            http=self.http(m["http"], kl["http"]) if "http" in m else None,
            transitions=tuple(self.route(t, ln, "transition", need_condition=True) for t, ln in
                              self.items(m.get("transitions", MarkedList()), kl.get("transitions", 1),
                                         "'transitions'")),
            fallback=self.fallback(m["fallback"], kl["fallback"]) if "fallback" in m else None,
            timeout=self.timeout(m["timeout"], kl["timeout"]) if "timeout" in m else None,
            interruptible=interruptible is not False,
            line=line,
        )

    def choices(self, node: Any, line: int) -> tuple[ChoiceSpec, ...]:
        out = []
        for item, ln in self.items(node, line, "'choices'"):
            c = self.mapping(item, ln, "a choice")
            if c is None:
                continue
            self.keys(c, ("label", "payload"), "a choice", required=("label", "payload"))
            if "label" in c and "payload" in c:
                out.append(ChoiceSpec(self.text(c["label"], c.key_lines["label"], "'label'"), str(c["payload"])))
        return tuple(out)

    def actions(self, node: Any, line: int) -> tuple[ActionSpec, ...]:
        out = []
        for item, ln in self.items(node, line, "'actions'"):
            if isinstance(item, str) and item in _ACTIONS:
                self.err(ln, f"action '{item}' needs a value ('- {item}: ...')")
                continue
            m = self.mapping(item, ln, "an action")
            if m is None:
                continue
            if len(m) != 1:
                self.err(ln, f"an action is a mapping with one key (one of {', '.join(_ACTIONS)}), got {list(m)}")
                continue
            kind, value = next(iter(m.items()))
            if kind not in _ACTIONS:
                self.err(m.key_lines[kind], f"unknown action '{kind}'{_hint(str(kind), _ACTIONS)}")
                continue
            args = self.action_args(kind, value, m.key_lines[kind])
            if args is not None:
                out.append(ActionSpec(kind, args, m.key_lines[kind]))
        return tuple(out)

    def action_args(self, kind: str, value: Any, line: int) -> dict[str, Any] | None:
        what = f"action '{kind}'"
        if kind == "reply":
            return {"text": self.text(value, line, what)}
        if kind == "add_tag":
            return {"tag": self.strings(value, line, what)[0]} if self.strings(value, line, what) else None
        if kind == "record_unanswered":
            return {"text": "{message}" if value is True else str(value)}
        m = self.mapping(value, line, what)
        if m is None:
            return None
        if kind == "set_var":
            return dict(m)
        spec = {"ask": (("text", "choices"), ("text", "choices")),
                "set_attribute": (("key", "value"), ("key", "value")),
                "open_ticket": (("subject", "description", "priority", "fields"), ("subject", "description")),
                "handoff": (("reason", "message"), ("reason", "message"))}[kind]
        self.keys(m, spec[0], what, required=spec[1])
        if any(k not in m for k in spec[1]):
            return None
        kl = m.key_lines
        if kind == "ask":
            return {"text": self.text(m["text"], kl["text"], "'text'"), "choices": self.choices(m["choices"], kl["choices"])}
        if kind == "set_attribute":
            return {"key": str(m["key"]), "value": m["value"]}
        if kind == "handoff":
            return {"reason": str(m["reason"]), "message": self.text(m["message"], kl["message"], "'message'")}
        priority = m.get("priority", "normal")
        if priority not in _PRIORITIES:
            self.err(kl["priority"], f"'priority' must be one of {', '.join(_PRIORITIES)}")
        fields = m.get("fields", {})
        if not isinstance(fields, dict):
            self.err(kl["fields"], "'fields' must be a mapping")
            fields = {}
        return {"subject": str(m["subject"]), "description": str(m["description"]),
                "priority": priority, "fields": dict(fields)}

    def collect(self, node: Any, line: int) -> Collect | None:
        m = self.mapping(node, line, "'collect'")
        if m is None:
            return None
        keys = ("validate", "attribute", "var", "pattern", "prompt", "invalid", "max_attempts", "next", "on_fail")
        self.keys(m, keys, "'collect'", required=("validate", "next", "on_fail"))
        kl = m.key_lines
        validators = self.strings(m.get("validate", "text"), kl.get("validate", line), "'validate'")
        for v in validators:
            if v not in _VALIDATORS:
                self.err(kl["validate"], f"unknown validator '{v}'{_hint(v, _VALIDATORS)} "
                                         f"(one of {', '.join(_VALIDATORS)})")
        pattern = m.get("pattern")
        if "regex" in validators and pattern is None:
            self.err(kl["validate"], "validator 'regex' needs a 'pattern'")
        if pattern is not None:
            try:
                re.compile(str(pattern))
            except re.error as exc:
                self.err(kl["pattern"], f"bad regex {pattern!r}: {exc}")
        attribute = m.get("attribute")
        if isinstance(attribute, str):
            attrs = {"*": attribute}
        elif isinstance(attribute, MarkedDict):
            attrs = {str(k): str(v) for k, v in attribute.items()}
            for k in attrs:
                if k not in validators:
                    self.err(attribute.key_lines[k], f"attribute mapping names '{k}', which is not validated here")
        elif attribute is None:
            attrs = {}
        else:
            self.err(kl["attribute"], "'attribute' must be a name or a mapping validator -> name")
            attrs = {}
        if not attrs and "var" not in m:
            self.err(m.line, "'collect' needs an 'attribute' or a 'var' to store the value in")
        return Collect(
            validators=validators, attribute=attrs, var=str(m["var"]) if "var" in m else None,
            pattern=str(pattern) if pattern is not None else None,
            prompt=self.text(m["prompt"], kl["prompt"], "'prompt'") if "prompt" in m else None,
            invalid=self.text(m["invalid"], kl["invalid"], "'invalid'") if "invalid" in m else None,
            max_attempts=self.integer(m.get("max_attempts", 3), kl.get("max_attempts", line), "'max_attempts'", 1),
            next=self.target(m.get("next"), kl.get("next", line), "'next'"),
            on_fail=self.target(m.get("on_fail"), kl.get("on_fail", line), "'on_fail'"),
        )

    def faq(self, node: Any, line: int) -> FaqStep | None:
        m = self.mapping(node, line, "'faq'")
        if m is None:
            return None
        keys = ("clarify", "none_of_these", "not_found", "not_found_choices", "fail_limit", "on_fail_limit",
                "max_choices")
        self.keys(m, keys, "'faq'", required=("clarify", "not_found"))
        kl = m.key_lines
        return FaqStep(
            clarify=self.text(m.get("clarify", ""), kl.get("clarify", line), "'clarify'"),
            none_of_these=self.text(m["none_of_these"], kl["none_of_these"], "'none_of_these'")
            if "none_of_these" in m else None,
            not_found=self.text(m.get("not_found", ""), kl.get("not_found", line), "'not_found'"),
            not_found_choices=self.choices(m["not_found_choices"], kl["not_found_choices"])
            if "not_found_choices" in m else (),
            fail_limit=self.integer(m.get("fail_limit", 2), kl.get("fail_limit", line), "'fail_limit'", 1),
            on_fail_limit=self.target(m["on_fail_limit"], kl["on_fail_limit"], "'on_fail_limit'")
            if "on_fail_limit" in m else None,
            max_choices=self.integer(m.get("max_choices", 3), kl.get("max_choices", line), "'max_choices'", 1),
        )

    def http(self, node: Any, line: int) -> HttpStep | None:
        m = self.mapping(node, line, "'http'")
        if m is None:
            return None
        self.keys(m, ("method", "url", "json", "timeout", "branches", "on_error"), "'http'",
                  required=("url", "on_error"))
        kl = m.key_lines
        method = str(m.get("method", "GET")).upper()
        if method not in _METHODS:
            self.err(kl["method"], f"'method' must be one of {', '.join(_METHODS)}")
        url = m.get("url", "")
        if not isinstance(url, str) or not re.match(r"^https?://", url):
            self.err(kl.get("url", line), "'url' must start with http:// or https://")
        timeout = m.get("timeout", 10)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            self.err(kl["timeout"], "'timeout' must be a positive number of seconds")
            timeout = 10
        branches = []
        for item, ln in self.items(m.get("branches", MarkedList()), kl.get("branches", line), "'branches'"):
            b = self.mapping(item, ln, "a branch")
            if b is None:
                continue
            self.keys(b, ("status", "path", "equals", "goto"), "a branch", required=("goto",))
            statuses = self.strings(b["status"], b.key_lines["status"], "'status'") if "status" in b else ()
            for s in statuses:
                if not _STATUS.match(s):
                    self.err(b.key_lines["status"], f"bad status {s!r}: use a code like 200 or a class like 2xx")
            if "equals" in b and "path" not in b:
                self.err(b.key_lines["equals"], "'equals' needs a 'path' into the JSON answer")
            branches.append(HttpBranch(statuses, str(b["path"]) if "path" in b else None, b.get("equals"),
                                       "equals" in b, self.target(b.get("goto"), b.key_lines.get("goto", ln),
                                                                  "'goto'")))
        return HttpStep(method, str(url), m.get("json"), float(timeout), tuple(branches),
                        self.target(m.get("on_error"), kl.get("on_error", line), "'on_error'"))

    def fallback(self, node: Any, line: int) -> Fallback | None:
        m = self.mapping(node, line, "'fallback'")
        if m is None:
            return None
        self.keys(m, ("reply", "choices", "max_retries", "then"), "'fallback'")
        kl = m.key_lines
        if "max_retries" in m and "then" not in m:
            self.err(kl["max_retries"], "'max_retries' needs a 'then' target for when retries run out")
        return Fallback(
            reply=self.text(m["reply"], kl["reply"], "'reply'") if "reply" in m else None,
            choices=self.choices(m["choices"], kl["choices"]) if "choices" in m else (),
            max_retries=self.integer(m["max_retries"], kl["max_retries"], "'max_retries'", 0)
            if "max_retries" in m else None,
            then=self.target(m["then"], kl["then"], "'then'") if "then" in m else None,
        )

    def timeout(self, node: Any, line: int) -> Timeout | None:
        m = self.mapping(node, line, "'timeout'")
        if m is None:
            return None
        self.keys(m, ("seconds", "actions", "goto"), "'timeout'", required=("seconds",))
        kl = m.key_lines
        seconds = m.get("seconds", 0)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
            self.err(kl.get("seconds", line), "'seconds' must be a positive number")
            seconds = 1
        return Timeout(float(seconds), self.actions(m["actions"], kl["actions"]) if "actions" in m else (),
                       self.target(m.get("goto", END), kl.get("goto", line), "'goto'"))


def _kind(node: Any) -> str:
    if isinstance(node, MarkedDict):
        return "a mapping"
    if isinstance(node, MarkedList):
        return "a list"
    return "nothing" if node is None else type(node).__name__


__all__ = [
    "END", "DEFAULT_ORDER_NUMBER", "ActionSpec", "ChoiceSpec", "Collect", "FaqStep", "Fallback", "Flow",
    "FlowError", "FlowSet", "FlowValidationError", "HttpBranch", "HttpStep", "MarkedDict", "MarkedList",
    "State", "Text", "Timeout", "Transition", "load_flow_sources", "load_flows",
]
