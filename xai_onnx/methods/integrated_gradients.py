"""Integrated Gradients (Sundararajan et al. 2017) on the word embeddings, with an adaptive step count."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..model import Model, RowGroup
from ..quadrature import METHODS, approximation_parameters
from .base import Computed, Explainer, Item


class IntegratedGradients(Explainer):
    """Per-token score ``sum_hidden((x - baseline) * integral of dF/dx along the straight path)``.

    Parameters (besides :class:`Explainer`'s)
    ----------
    n_steps : integration steps (the first round's count when ``adaptive``).
    method : ``gausslegendre`` (default), ``riemann_left``, ``riemann_right``, ``riemann_middle``, ``riemann_trapezoid``.
    internal_batch_size : rows per onnxruntime call.
    adaptive : double the step count, per text, until ``|delta| <= tolerance * |F(x) - F(baseline)|`` or ``max_steps``.
    """

    name = "ig"
    needs_gradient = True
    needs_baseline_value = True

    def __init__(self, model: Model, *, n_steps: int = 50, method: str = "gausslegendre",
                 internal_batch_size: int | None = None, adaptive: bool = False, tolerance: float = 0.01,
                 max_steps: int = 512, baseline: str = "pad", output: str = "prob"):
        super().__init__(model, baseline=baseline, output=output, batch_size=internal_batch_size)
        if method not in METHODS:
            raise InputError(f"unknown integration method {method!r}; choose one of {', '.join(METHODS)}")
        approximation_parameters(method, n_steps)  # validates n_steps
        if adaptive and not (tolerance > 0):
            raise InputError(f"tolerance must be > 0, got {tolerance}")
        if adaptive and max_steps < n_steps:
            raise InputError(f"max_steps ({max_steps}) must be >= n_steps ({n_steps})")
        self.n_steps = int(n_steps)
        self.method = method
        self.adaptive = adaptive
        self.tolerance = float(tolerance)
        self.max_steps = int(max_steps)

    def settings(self) -> dict[str, Any]:
        s = {**super().settings(), "n_steps": self.n_steps, "integration": self.method}
        if self.adaptive:
            s.update(adaptive=True, tolerance=self.tolerance, max_steps=self.max_steps)
        return s

    def _integrate(self, items: list[Item], n_steps: int) -> list[tuple[np.ndarray, float]]:
        step_sizes, alphas = approximation_parameters(self.method, n_steps)
        n_labels = len(self.model.labels)
        groups = []
        for it in items:
            diff = it.x - it.baseline
            path = it.baseline[None] + alphas[:, None, None].astype(np.float32) * diff[None]  # (n_steps, seq, dim)
            w_logit, w_prob = it.weights(n_labels, self.output, n_steps)
            groups.append(RowGroup(path.astype(np.float32), it.encoded.type_ids, w_logit, w_prob))
        outs = self.run(groups, gradient=True)
        results = []
        for it, out in zip(items, outs):
            grads = out["grad"].astype(np.float64)  # (n_steps, seq, dim)
            integrated = np.tensordot(step_sizes, grads, axes=1)  # (seq, dim)
            scores = ((it.x - it.baseline).astype(np.float64) * integrated).sum(-1)
            assert it.baseline_value is not None
            delta = float(scores.sum() - (it.output_value - it.baseline_value))
            results.append((scores, delta))
        return results

    def compute(self, items: list[Item]) -> list[Computed]:
        done: dict[int, Computed] = {}
        pending = list(range(len(items)))
        steps = self.n_steps
        while pending:
            res = self._integrate([items[i] for i in pending], steps)
            still = []
            for i, (scores, delta) in zip(pending, res):
                it = items[i]
                assert it.baseline_value is not None
                gap = abs(it.output_value - it.baseline_value)
                converged = abs(delta) <= self.tolerance * gap or gap == 0.0
                if not self.adaptive or converged or steps * 2 > self.max_steps:
                    extra = {"n_steps": steps}
                    if self.adaptive:
                        extra["converged"] = bool(converged)
                    done[i] = Computed(scores, delta, extra)
                else:
                    still.append(i)
            pending = still
            steps *= 2
        return [done[i] for i in range(len(items))]
