"""Finite-difference saliency: forward passes only, so it runs on bundles without a gradient graph."""

from __future__ import annotations

import numpy as np

from ..model import Model
from ..registry import Option, register
from .base import BASELINE, GRANULARITY, OUTPUT, Computed, Explainer, Item, batch_option


@register
class FiniteDifference(Explainer):
    """Per-token central difference of F along the token's own direction ``d_i = x_i - baseline_i``.

    ``score_i = (F(x + eps d_i) - F(x - eps d_i)) / (2 eps)`` approximates gradient x (input - baseline), with
    error O(eps^2). Special tokens (d_i = 0) score 0 without a pass.
    """

    name = "fd"
    needs_gradient = False
    shares_rows = True
    options = (Option("epsilon", float, 1e-2, "finite-difference step, a fraction of x - baseline", above=0.0, below=1.0),
               BASELINE, OUTPUT, batch_option(), GRANULARITY)

    def __init__(self, model: Model, *, epsilon: float = 1e-2, baseline: str = "pad", output: str | None = None,
                 batch_size: int | None = None, granularity: str = "token"):
        super().__init__(model, baseline=baseline, output=output, batch_size=batch_size, granularity=granularity)
        self.epsilon = self._parse("epsilon", epsilon)

    def evaluations(self, n_tokens: int) -> int:
        return 2 * n_tokens

    def compute(self, items: list[Item]) -> list[Computed]:
        def rows_of(it: Item) -> np.ndarray:
            pos = np.flatnonzero(~it.encoded.special)
            rows = np.repeat(it.x[None], 2 * len(pos), axis=0)  # (2 * n_tokens, seq, dim): + then - per token
            direction = it.x[pos] - it.baseline[pos]
            rows[2 * np.arange(len(pos)), pos] += self.epsilon * direction
            rows[2 * np.arange(len(pos)) + 1, pos] -= self.epsilon * direction
            return rows

        results = []
        for it, out in zip(items, self.run_forward_shared(items, rows_of)):
            scores = np.zeros(it.x.shape[0])
            if out is not None:
                pos = np.flatnonzero(~it.encoded.special)
                f = it.value(out)
                scores[pos] = (f[0::2] - f[1::2]) / (2 * self.epsilon)
            results.append(Computed(scores))
        return results
