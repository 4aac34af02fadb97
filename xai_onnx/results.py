"""Typed, frozen result objects. ``to_dict()`` gives the JSON schema the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Target:
    index: int
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label}


@dataclass(frozen=True)
class Prediction:
    text: str
    target: Target  # the predicted class
    probabilities: dict[str, float]
    logits: tuple[float, ...]
    truncated: bool = False
    text_pair: str | None = None
    #: one-output models (cross-encoders, regression): the logit; similarity bundles: the cosine
    score: float | None = None
    #: token classification: every token and its predicted label and that label's probability
    tokens: tuple[str, ...] | None = None
    token_labels: tuple[str, ...] | None = None
    token_probabilities: tuple[float, ...] | None = None

    @property
    def label(self) -> str:
        return self.target.label

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"text": self.text}
        if self.text_pair is not None:
            d["text_pair"] = self.text_pair
        if self.token_labels is not None:
            d.update({"tokens": list(self.tokens or ()), "labels": list(self.token_labels),
                      "probabilities": list(self.token_probabilities or ()), "truncated": self.truncated})
            return d
        d.update({"label": self.label, "index": self.target.index, "probabilities": dict(self.probabilities),
                  "logits": list(self.logits), "truncated": self.truncated})
        if self.score is not None:
            d["score"] = self.score
        return d


@dataclass(frozen=True)
class Attribution:
    """One text's explanation for one target.

    scores : ndarray of shape (n_tokens,), one per token, special tokens included; with ``granularity == "word"``
        one per word (``tokens`` and ``offsets`` are then the words' texts and character spans, special tokens
        dropped).
    convergence_delta : for Integrated Gradients ``sum(scores) - (F(x) - F(baseline))``, else None.
    output_value, baseline_value : F(x) and F(baseline), the target's probability (or logit with output="logit").
    """

    text: str
    method: str
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    scores: np.ndarray
    target: Target
    prediction: Target
    probabilities: dict[str, float]
    output: str
    output_value: float
    baseline_value: float | None
    convergence_delta: float | None
    settings: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False
    warnings: tuple[str, ...] = ()
    #: pairs and similarity: the second text, and per token 0 (first text), 1 (second) or None (special token)
    text_pair: str | None = None
    segments: tuple[int | None, ...] | None = None
    #: similarity: per side explained (segment 0, then 1), F(baseline of that side, other side) and the delta
    sides: tuple[dict[str, Any], ...] | None = None
    granularity: str = "token"  # "word": tokens, offsets and scores are per word, special tokens dropped

    @property
    def label(self) -> str:
        return self.prediction.label

    def word_scores(self) -> list[tuple[str, float]]:
        """Scores summed over the tokens of each whitespace-separated word of the text (special tokens dropped)."""
        words: list[tuple[int, int, float]] = []
        for (a, b), s in zip(self.offsets, self.scores):
            if a == b:
                continue
            if words and a == words[-1][1]:  # no whitespace between: same word
                start, _, acc = words[-1]
                words[-1] = (start, b, acc + float(s))
            else:
                words.append((a, b, float(s)))
        return [(self.text[a:b], s) for a, b, s in words]

    def to_html(self) -> str:
        """This explanation as a self-contained HTML page (see :func:`xai_onnx.html.render` for several)."""
        from .html import render

        return render([self])

    def to_dict(self) -> dict[str, Any]:
        d = self._base_dict()
        if self.text_pair is not None:
            d = {"text": self.text, "text_pair": self.text_pair, **{k: v for k, v in d.items() if k != "text"}}
        if self.segments is not None:
            d["segments"] = list(self.segments)
        if self.sides is not None:
            d["sides"] = [dict(s) for s in self.sides]
        return d

    def _base_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "target": self.target.to_dict(),
            "probabilities": dict(self.probabilities),
            "tokens": list(self.tokens),
            "offsets": [list(o) for o in self.offsets],
            "scores": [float(s) for s in self.scores],
            "convergence_delta": self.convergence_delta,
            "output": self.output,
            "output_value": self.output_value,
            "baseline_value": self.baseline_value,
            "method": self.method,
            "settings": dict(self.settings),
            "truncated": self.truncated,
            "warnings": list(self.warnings),
            "granularity": self.granularity,
        }


@dataclass(frozen=True)
class PositionAttribution:
    """One explained position of a token-classification input: scores over every input token."""

    position: int
    token: str
    label: str  # the label predicted at this position
    target: Target
    scores: np.ndarray
    output_value: float
    baseline_value: float | None
    convergence_delta: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "token": self.token, "label": self.label, "target": self.target.to_dict(),
                "scores": [float(s) for s in self.scores], "output_value": self.output_value,
                "baseline_value": self.baseline_value, "convergence_delta": self.convergence_delta}


@dataclass(frozen=True)
class TokenAttribution:
    """A token-classification input's explanation: one :class:`PositionAttribution` per explained position."""

    text: str
    method: str
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    predicted: tuple[str, ...]  # the predicted label of every token
    positions: tuple[PositionAttribution, ...]
    output: str
    settings: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False
    warnings: tuple[str, ...] = ()
    text_pair: str | None = None
    segments: tuple[int | None, ...] | None = None

    def to_html(self) -> str:
        from .html import render

        return render([self])

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"text": self.text}
        if self.text_pair is not None:
            d["text_pair"] = self.text_pair
        d.update({
            "tokens": list(self.tokens),
            "offsets": [list(o) for o in self.offsets],
            "predicted": list(self.predicted),
            "positions": [p.to_dict() for p in self.positions],
            "output": self.output,
            "method": self.method,
            "settings": dict(self.settings),
            "truncated": self.truncated,
            "warnings": list(self.warnings),
        })
        if self.segments is not None:
            d["segments"] = list(self.segments)
        return d
