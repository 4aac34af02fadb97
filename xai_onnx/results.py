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

    @property
    def label(self) -> str:
        return self.target.label

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "index": self.target.index,
                "probabilities": dict(self.probabilities), "logits": list(self.logits), "truncated": self.truncated}


@dataclass(frozen=True)
class Attribution:
    """One text's explanation for one target.

    scores : ndarray of shape (n_tokens,), one per token, special tokens included.
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
        }
