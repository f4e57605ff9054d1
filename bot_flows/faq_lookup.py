"""The FAQ as the flow engine sees it: ranked candidates with their answers and a decision, and the
adapter from bot_flows.matcher (which returns entry ids) to that view."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from scrm.domain import Choice


@dataclass(frozen=True)
class FaqCandidate:
    """One knowledge-base entry the FAQ proposes, with what the bot would send."""

    entry_id: str
    question: str
    answer: str
    buttons: tuple[Choice, ...] = ()
    confidence: float = field(default=0.0, compare=False)  # 0..1, for the FAQ answer report


@dataclass(frozen=True)
class FaqMatch:
    """The FAQ's decision on a question and the candidates behind it."""

    decision: str  # "answer" | "clarify" | "reject"
    candidates: tuple[FaqCandidate, ...] = ()
    # Calibrated probability that the decision's answer is right (the best candidate for "answer" and
    # "reject", the offered options for "clarify"); None: use the best candidate's confidence.
    probability: float | None = field(default=None, compare=False)

    def outcome_confidence(self) -> float | None:
        """The confidence reported with this outcome (FAQ report)."""
        if self.probability is not None:
            return self.probability
        return self.candidates[0].confidence if self.candidates else None


class FaqLookup(Protocol):
    """What the engine needs from the knowledge base: ranked candidates with their answers."""

    def match(self, text: str) -> FaqMatch:
        """Match a customer question."""
        ...


CACHE_SIZE = 2048  # distinct questions remembered per index


class _Answers:
    """A matcher's decisions on recent questions, valid for one generation of its index."""

    def __init__(self) -> None:
        self.generation = -1
        self.by_text: OrderedDict[str, FaqMatch] = OrderedDict()


# Per matcher (a lookup is made for every bot round; the index lives as long as the process's matcher).
_CACHES: weakref.WeakKeyDictionary[Any, _Answers] = weakref.WeakKeyDictionary()


class MatcherLookup:
    """Adapts bot_flows.matcher.FaqMatcher (candidates carry ids only) to FaqLookup.

    Customers ask the same questions in the same words ("运费怎么收？") over and over: a match is a pure
    function of the text and the index, so a matcher that counts its changes (`generation`) has its
    decisions remembered per text (tokenizing and ranking were most of a bot round's Python time).
    """

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher

    def match(self, text: str) -> FaqMatch:
        """Match and attach each candidate's question, answer and buttons from its entry."""
        generation = getattr(self.matcher, "generation", None)
        if not isinstance(generation, int):
            return self._match(text)
        answers = _CACHES.get(self.matcher)
        if answers is None:
            answers = _CACHES[self.matcher] = _Answers()
        if answers.generation != generation:
            answers.generation = generation
            answers.by_text.clear()
        found = answers.by_text.get(text)
        if found is not None:
            answers.by_text.move_to_end(text)
            return found
        found = self._match(text)
        if getattr(self.matcher, "generation", None) == generation:  # not changed while it matched
            answers.by_text[text] = found
            if len(answers.by_text) > CACHE_SIZE:
                answers.by_text.popitem(last=False)
        return found

    def _match(self, text: str) -> FaqMatch:
        result = self.matcher.match(text)
        cands = []
        n_options = getattr(result, "n_options", None)
        shown = result.candidates[:n_options] if result.decision == "clarify" and n_options else result.candidates
        for c in shown:
            entry = self.matcher.get(c.entry_id)
            if entry is not None:
                cands.append(FaqCandidate(str(c.entry_id), entry.question, entry.answer, tuple(entry.buttons),
                                          round(float(c.confidence), 4)))
        decision = result.decision if cands else "reject"
        prob = getattr(result, "options_probability" if decision == "clarify" else "probability", None)
        return FaqMatch(decision, tuple(cands), round(float(prob), 4) if prob is not None else None)
