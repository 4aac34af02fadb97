"""Gradient saliency and gradient x input: one gradient pass per text and target, and no forward pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model, RowGroup
from ..registry import register
from ..results import Target
from ..tasks import ClassObjective
from ..tokenization import Encoded
from .base import Computed, Explainer, Item, Result, TargetSpec, target_weights


class _GradientMethod(Explainer):
    needs_gradient = True

    def __init__(self, model: Model, *, baseline: str = "pad", output: str | None = None, batch_size: int | None = None,
                 granularity: str = "token"):
        super().__init__(model, baseline=baseline, output=output, batch_size=batch_size, granularity=granularity)

    def score(self, item: Item, grad: np.ndarray) -> np.ndarray:
        """Per-token scores from dF/dx of shape (seq, dim), float64."""
        raise NotImplementedError

    def gradients(self, items: list[Item]) -> list[np.ndarray]:
        """dF/dx per item: ndarray of shape (seq, dim)."""
        groups = [it.group(it.x[None]) for it in items]
        return [out["grad"][0].astype(np.float64) for out in self.run(groups, gradient=True)]

    def compute(self, items: list[Item]) -> list[Computed]:
        return [Computed(self.score(it, g)) for it, g in zip(items, self.gradients(items))]

    def _explain_chunk(self, encoded: list[Encoded], target: TargetSpec,
                       task_options: dict[str, Any] | None = None) -> list[Result]:
        """The gradient graph also returns the logits, so the forward pass the base class runs to learn the
        prediction is skipped: explicit targets (an index, a name, "all") are differentiated directly, and the
        predicted class through the graph's arg-max weights (``w_top``) where the bundle has them. Sequence
        classification only: other tasks choose their targets from the forward pass."""
        if (target is None and not self.model.gradient_picks_top
                or self.model.manifest.task != "sequence-classification"):
            return super()._explain_chunk(encoded, target, task_options)
        n_labels = len(self.model.labels)
        column = 0 if self.output == "logit" else 1
        xs = [self.model.embed(e.ids) for e in encoded]
        wanted: list[list[int] | None] = []
        groups = []
        for e, x in zip(encoded, xs):
            if target is None:
                w_top = np.zeros((1, 2), dtype=np.float32)
                w_top[0, column] = 1.0
                groups.append(RowGroup(x[None], e.type_ids, w_top=w_top))
                wanted.append(None)
                continue
            ts = self._targets(target, -1)
            rows = np.repeat(x[None], len(ts), axis=0)
            groups.append(RowGroup(rows, e.type_ids, *target_weights(ts, n_labels, self.output)))
            wanted.append(ts)
        items, scores = [], []
        for e, x, chosen, out in zip(encoded, xs, wanted, self.run(groups, gradient=True)):
            logits = out["logits"][0]
            baseline = self.baseline_embeds(e, x)
            for k, t in enumerate(chosen if chosen is not None else [int(np.argmax(logits))]):
                objective = ClassObjective(Target(t, self.model.labels[t]), self.output, n_labels)
                item = Item(e, x, baseline, t, logits, float(self.objective(logits, t)), objective=objective)
                items.append(item)
                scores.append(self.score(item, out["grad"][k].astype(np.float64)))
        return [self._result(item, Computed(s)) for item, s in zip(items, scores)]


@register
class Saliency(_GradientMethod):
    """Per-token L2 norm of the gradient of the target output with respect to the token's embedding."""

    name = "saliency"
    word_merge = "norm"  # a word's gradient norm: the norm of its tokens' stacked gradients

    def score(self, item: Item, grad: np.ndarray) -> np.ndarray:
        return np.linalg.norm(grad, axis=-1)


@register
class GradientXInput(_GradientMethod):
    """Per-token ``sum_hidden(x * dF/dx)``."""

    name = "grad_x_input"

    def score(self, item: Item, grad: np.ndarray) -> np.ndarray:
        return (item.x.astype(np.float64) * grad).sum(-1)
