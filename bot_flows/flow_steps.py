"""The checks of a flow state's parts: actions, choices and the steps (collect, faq, http, fallback, timeout).

StepChecker builds each part's model from its YAML node, recording a FlowError for what is wrong.
"""

from __future__ import annotations

import re
from typing import Any

from bot_flows.flow_model import (
    END,
    ActionSpec,
    ChoiceSpec,
    Collect,
    Fallback,
    FaqStep,
    HttpBranch,
    HttpStep,
    Timeout,
)
from bot_flows.flow_yaml import MarkedDict, MarkedList, ShapeChecker, did_you_mean

_ACTIONS = ("reply", "ask", "set_attribute", "add_tag", "open_ticket", "handoff", "record_unanswered",
            "set_var")
_VALIDATORS = ("phone", "email", "order_number", "text", "regex")
_PRIORITIES = ("low", "normal", "high", "urgent")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_STATUS = re.compile(r"^[1-5](\d\d|xx)$")


class StepChecker(ShapeChecker):
    """Checks actions, choices and the waiting steps of a state."""

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
                self.err(m.key_lines[kind], f"unknown action '{kind}'{did_you_mean(str(kind), _ACTIONS)}")
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
                self.err(kl["validate"], f"unknown validator '{v}'{did_you_mean(v, _VALIDATORS)} "
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
