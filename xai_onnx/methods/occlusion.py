"""Occlusion (Zeiler & Fergus 2014) over tokens, with Captum's averaging over the windows that cover a token."""

from __future__ import annotations

import numpy as np

from ..model import Model
from ..registry import Option, register
from ..tokenization import Encoded
from .base import BASELINE, GRANULARITY, OUTPUT, Computed, Explainer, Item, batch_option


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
    shares_rows = True
    options = (
        Option("window", int, 1, "occlusion window in tokens", minimum=1, maximum=4096),
        Option("stride", int, 1, "tokens between occlusion windows", minimum=1, maximum=4096),
        BASELINE, OUTPUT, batch_option("perturbations_per_eval"), GRANULARITY,
    )

    def __init__(self, model: Model, *, window: int = 1, stride: int = 1, baseline: str = "pad", output: str | None = None,
                 perturbations_per_eval: int | None = None, granularity: str = "token"):
        super().__init__(model, baseline=baseline, output=output, batch_size=perturbations_per_eval,
                         granularity=granularity)
        self.perturbations_per_eval = self.batch_size
        self.window = self._parse("window", window)
        self.stride = self._parse("stride", stride)

    def windows(self, e: Encoded) -> list[tuple[int, int]]:
        """(start, end) of each occluding window, as Captum places them; in a sentence pair no window holds tokens of
        both texts: windows run over [0, first token of the second text) and [that token, end) separately."""
        seq = len(e)
        second = np.flatnonzero(e.segment_ids() == 1)
        spans = [(0, seq)] if second.size == 0 else [(0, int(second[0])), (int(second[0]), seq)]
        out = []
        for lo, hi in spans:
            w = min(self.window, hi - lo)
            out += [(int(s), int(s) + w) for s in range(lo, hi - w + 1, self.stride)]
        return out

    def evaluations(self, n_tokens: int) -> int:
        return len(range(0, n_tokens - min(self.window, n_tokens) + 1, self.stride))

    def compute(self, items: list[Item]) -> list[Computed]:
        def rows_of(it: Item) -> np.ndarray:
            windows = self.windows(it.encoded)
            rows = np.repeat(it.x[None], len(windows), axis=0)  # (n_windows, seq, dim)
            for r, (a, b) in enumerate(windows):
                rows[r, a:b] = it.baseline[a:b]
            return rows

        results = []
        for it, out in zip(items, self.run_forward_shared(items, rows_of)):
            windows = self.windows(it.encoded)
            seq = it.x.shape[0]
            total = np.zeros(seq)
            count = np.zeros(seq)
            if out is not None:
                drops = it.output_value - it.value(out)  # (n_windows,)
                for (a, b), d in zip(windows, drops):
                    total[a:b] += d
                    count[a:b] += 1
            results.append(Computed(np.divide(total, count, out=np.zeros(seq), where=count > 0)))
        return results
