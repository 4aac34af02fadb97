"""Occlusion (Zeiler & Fergus 2014) over tokens, with Captum's averaging over the windows that cover a token."""

from __future__ import annotations

import numpy as np

from ..model import Model, RowGroup
from ..registry import Option, register
from .base import BASELINE, OUTPUT, Computed, Explainer, Item, batch_option


@register
class Occlusion(Explainer):
    """A token's score is the mean drop ``F(x) - F(x with a window replaced by the baseline)`` over windows holding it.

    Parameters (besides :class:`Explainer`'s)
    ----------
    window : tokens per occluding window. stride : tokens between window starts.
    perturbations_per_eval : rows per onnxruntime call.
    """

    name = "occlusion"
    needs_gradient = False
    options = (
        Option("window", int, 1, "occlusion window in tokens", minimum=1, maximum=4096),
        Option("stride", int, 1, "tokens between occlusion windows", minimum=1, maximum=4096),
        BASELINE, OUTPUT, batch_option("perturbations_per_eval"),
    )

    def __init__(self, model: Model, *, window: int = 1, stride: int = 1, baseline: str = "pad", output: str = "prob",
                 perturbations_per_eval: int | None = None):
        super().__init__(model, baseline=baseline, output=output, batch_size=perturbations_per_eval)
        self.perturbations_per_eval = self.batch_size
        self.window = self._parse("window", window)
        self.stride = self._parse("stride", stride)

    def compute(self, items: list[Item]) -> list[Computed]:
        groups, starts_all = [], []
        for it in items:
            seq = it.x.shape[0]
            w = min(self.window, seq)
            starts = np.arange(0, seq - w + 1, self.stride)
            rows = np.repeat(it.x[None], len(starts), axis=0)  # (n_windows, seq, dim)
            for r, s in enumerate(starts):
                rows[r, s:s + w] = it.baseline[s:s + w]
            groups.append(RowGroup(rows, it.encoded.type_ids))
            starts_all.append((starts, w))
        outs = self.run(groups, gradient=False)
        results = []
        for it, out, (starts, w) in zip(items, outs, starts_all):
            drops = it.output_value - self.objective(out["logits"].astype(np.float64), it.target)  # (n_windows,)
            seq = it.x.shape[0]
            total = np.zeros(seq)
            count = np.zeros(seq)
            for s, d in zip(starts, drops):
                total[s:s + w] += d
                count[s:s + w] += 1
            results.append(Computed(np.divide(total, count, out=np.zeros(seq), where=count > 0)))
        return results
