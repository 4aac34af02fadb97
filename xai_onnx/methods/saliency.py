"""Gradient saliency and gradient x input, one gradient pass per text and target."""

from __future__ import annotations

import numpy as np

from ..model import Model, RowGroup
from .base import Computed, Explainer, Item


class _GradientMethod(Explainer):
    needs_gradient = True

    def __init__(self, model: Model, *, baseline: str = "pad", output: str = "prob", batch_size: int | None = None):
        super().__init__(model, baseline=baseline, output=output, batch_size=batch_size)

    def gradients(self, items: list[Item]) -> list[np.ndarray]:
        """dF/dx per item: ndarray of shape (seq, dim)."""
        n_labels = len(self.model.labels)
        groups = [RowGroup(it.x[None], it.encoded.type_ids, *it.weights(n_labels, self.output, 1)) for it in items]
        return [out["grad"][0].astype(np.float64) for out in self.run(groups, gradient=True)]


class Saliency(_GradientMethod):
    """Per-token L2 norm of the gradient of the target output with respect to the token's embedding."""

    name = "saliency"

    def compute(self, items: list[Item]) -> list[Computed]:
        return [Computed(np.linalg.norm(g, axis=-1)) for g in self.gradients(items)]


class GradientXInput(_GradientMethod):
    """Per-token ``sum_hidden(x * dF/dx)``."""

    name = "grad_x_input"

    def compute(self, items: list[Item]) -> list[Computed]:
        return [Computed((it.x.astype(np.float64) * g).sum(-1)) for it, g in zip(items, self.gradients(items))]
