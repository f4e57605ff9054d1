"""Bot flows as data: the loader that validates flow files into the model (flow_model) with file:line errors.

A flow file (config/flows/*.yaml) holds one flow: global `triggers` that enter it, and `states`
with on-enter `actions`, an automatic `then`, at most one waiting step (`collect`, `faq`, `http`),
`transitions` on the next input, a `fallback` with a retry limit and a `timeout`. The header of
config/flows/faq.yaml is the reference. Targets ("goto") are "state", "flow:state" or "end".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bot_flows.conditions import Condition
from bot_flows.flow_model import END, Flow, FlowError, FlowSet, FlowValidationError, State, Transition
from bot_flows.flow_steps import StepChecker
from bot_flows.flow_yaml import MarkedDict, MarkedList, did_you_mean, parse
from bot_flows.intents import compile_phrase

_COND_KEYS = ("keywords", "says", "unless", "exact", "regex", "payload", "intent", "first_message",
              "business_hours", "has_attribute", "any")
_ROUTE_KEYS = (*_COND_KEYS, "actions", "goto", "continue")
_FLOW_KEYS = ("flow", "description", "default", "priority", "start", "triggers", "fallback", "states")
_STATE_KEYS = ("description", "actions", "then", "collect", "faq", "http", "transitions", "fallback",
               "timeout", "interruptible")
_NAME = re.compile(r"^[A-Za-z_][\w-]*$")


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
            doc = parse(text)
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
                                    + did_you_mean(flow_name, flows)))
        elif state not in flows[flow_name].states:
            errors.append(FlowError(label, line, f"unknown state '{state}' in flow '{flow_name}'"
                                    + did_you_mean(state, flows[flow_name].states)))
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


class FileChecker(StepChecker):
    """Walks one flow document, building the model and collecting FlowErrors with line numbers."""

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
            self.err(root.key_lines["start"], f"unknown start state '{start}'{did_you_mean(start, states)}")
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


__all__ = ["FlowValidationError", "load_flow_sources", "load_flows"]
