"""The flow model: frozen dataclasses a validated flow file becomes, and the validation errors.

Built by the loader (bot_flows.flows), read by the engine; nothing here parses or runs anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot_flows.conditions import Condition

END = "end"


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
