"""Calibrated confidence: the matcher's features -> the probability that its answer is right.

Two logistic models per configuration (question language zh | en, with or without the semantic
re-ranker): `top1`, the probability that the best candidate is the right entry, and `top3`, that the
right entry is among the candidates a "did you mean" would offer. They are fitted on the FAQ dev sets by
`bench/calibrate_faq.py` (scikit-learn, a development tool only) and shipped as coefficients in
`calibration.json`; at run time a probability is one dot product.

The bot answers when `top1` reaches the target precision ("answer only when >= 90% likely right"),
asks "did you mean" when `top3` reaches the clarify target, and otherwise says it does not know and
offers a human. The same targets hold for every configuration because each one is calibrated on its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

Decision = Literal["answer", "clarify", "reject"]
DEFAULT_PATH = Path(__file__).with_name("calibration.json")


@dataclass(frozen=True)
class Logistic:
    """A fitted logistic regression over named features (standardized with the fit's mean and scale)."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Logistic:
        """Read one model ({features, mean, scale, coef, intercept}); raises ValueError when inconsistent."""
        feats = tuple(str(f) for f in data["features"])
        arrays = [np.asarray(data[k], np.float64) for k in ("mean", "scale", "coef")]
        if any(a.shape != (len(feats),) for a in arrays):
            raise ValueError("calibration model: features, mean, scale and coef differ in length")
        mean, scale, coef = arrays
        return cls(feats, mean, np.where(scale > 0, scale, 1.0), coef, float(data["intercept"]))

    def to_json(self) -> dict[str, Any]:
        """The JSON form written by the fitting script."""
        return {"features": list(self.features), "mean": _round(self.mean), "scale": _round(self.scale),
                "coef": _round(self.coef), "intercept": round(self.intercept, 6)}

    def __post_init__(self) -> None:
        # (feature, mean, coef / scale) as plain floats: a question's probability is a few multiplications,
        # cheaper in Python than building arrays for ten numbers.
        terms = tuple((f, float(m), float(c) / float(s))
                      for f, m, c, s in zip(self.features, self.mean, self.coef, self.scale, strict=True))
        object.__setattr__(self, "_terms", terms)

    def standardized(self, x: Mapping[str, float]) -> np.ndarray:
        """The feature vector in the fit's units (a missing feature counts as its mean)."""
        raw = np.array([x.get(f, m) for f, m in zip(self.features, self.mean, strict=True)], np.float64)
        out: np.ndarray = (raw - self.mean) / self.scale
        return out

    def probability(self, x: Mapping[str, float]) -> float:
        """P(true | features)."""
        z = self.intercept
        for f, m, w in self._terms:  # type: ignore[attr-defined]
            z += w * (x.get(f, m) - m)
        return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))

    def contributions(self, x: Mapping[str, float]) -> dict[str, float]:
        """How much each feature moved the log-odds away from an average question (for explanations)."""
        return {f: round(float(c), 4) for f, c in zip(self.features, self.standardized(x) * self.coef, strict=True)}


@dataclass(frozen=True)
class Calibration:
    """The fitted models by configuration key ("zh", "en", "zh+rerank", "en+rerank")."""

    models: Mapping[str, Mapping[str, Logistic]]
    info: Mapping[str, Any]

    def model(self, language: str, rerank: bool, target: str) -> Logistic | None:
        """The model for a configuration; an uncalibrated one falls back to the nearest calibrated."""
        for key in (f"{language}+rerank" if rerank else language, language, "zh"):
            found = self.models.get(key, {}).get(target)
            if found is not None:
                return found
        return None

    def key(self, language: str, rerank: bool) -> str:
        """The configuration key actually used for a question."""
        for key in (f"{language}+rerank" if rerank else language, language, "zh"):
            if key in self.models:
                return key
        return "uncalibrated"


def load(path: str | Path | None = None) -> Calibration:
    """Read a calibration file (the shipped one by default); raises ValueError naming the problem."""
    if not path and not DEFAULT_PATH.exists():  # a checkout before the first fit: rank-confidence only
        return Calibration({}, {"uncalibrated": True})
    return _load(str(Path(path) if path else DEFAULT_PATH))


@lru_cache(maxsize=4)
def _load(path: str) -> Calibration:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        models = {key: {target: Logistic.from_json(m) for target, m in conf.items() if target in ("top1", "top3")}
                  for key, conf in data["configurations"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"FAQ calibration file {path}: {exc}") from None
    return Calibration(models, {k: v for k, v in data.items() if k != "configurations"})


def decide(p_top1: float, p_options: float, n_candidates: int, answer_at: float, clarify_at: float) -> Decision:
    """Answer, ask "did you mean" or refuse, by the calibrated probabilities and the target precisions."""
    if n_candidates == 0:
        return "reject"
    if p_top1 >= answer_at:
        return "answer"
    if p_options >= clarify_at:
        return "clarify"
    return "reject"


def _round(a: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in a]
