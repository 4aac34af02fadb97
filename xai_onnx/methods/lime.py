"""LIME (Ribeiro et al. 2016) for text: a weighted ridge regression of F on which words are present.

Sampling as lime's ``LimeTextExplainer``: the first sample is the text itself (F(x), known: no evaluation), each
other one removes k features, k uniform in 1..M, at positions drawn without replacement. A sample z (a 0/1 vector
over the M features) weighs ``sqrt(exp(-d**2 / w**2))`` with d the cosine distance between z and the all-ones
vector and w = ``kernel_width`` (0.25 by default: lime's 25 on its distances times 100). The scores are the
coefficients of a ridge regression with an intercept (``alpha``, lime's 1.0) fitted with those weights; the result's
settings record the fit's weighted R^2 (``local_fit_r2``) and intercept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model
from ..perturbation import Features
from ..registry import Option, register
from .agnostic import PerturbationExplainer, samples_option
from .base import Computed, Item


def lime_masks(M: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples (n, M) of booleans, True = present; row 0 is the text itself."""
    masks = np.ones((n, M), dtype=bool)
    if M == 0:
        return masks
    removed = rng.integers(1, M + 1, size=n - 1)
    for r, k in enumerate(removed, start=1):
        masks[r, rng.choice(M, size=int(k), replace=False)] = False
    return masks


def kernel_weights(masks: np.ndarray, width: float) -> np.ndarray:
    """lime's kernel on the cosine distance to the all-ones vector: (n,)."""
    M = masks.shape[1]
    present = masks.sum(1).astype(np.float64)
    cos = np.sqrt(present / M) if M else np.ones(masks.shape[0])  # cos(z, 1) = |z| / (sqrt|z| sqrt M)
    d = 1.0 - cos  # an empty sample has distance 1 (sklearn's convention for a zero vector)
    return np.sqrt(np.exp(-(d**2) / width**2))


def weighted_ridge(X: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> tuple[np.ndarray, float, float]:
    """Ridge with an intercept, sample weights w (as scikit-learn's Ridge): coefficients, intercept, weighted R^2."""
    sw = w / w.sum()
    x_mean = sw @ X
    y_mean = float(sw @ y)
    Xc, yc = X - x_mean, y - y_mean
    A = (Xc * w[:, None]).T @ Xc + alpha * np.eye(X.shape[1])
    coef = np.linalg.lstsq(A, (Xc * w[:, None]).T @ yc, rcond=None)[0]
    intercept = y_mean - float(x_mean @ coef)
    resid = y - (X @ coef + intercept)
    ss_tot = float(w @ (yc**2))
    r2 = 1.0 - float(w @ resid**2) / ss_tot if ss_tot > 0 else float("nan")
    return coef, intercept, r2


@register
class Lime(PerturbationExplainer):
    """LIME on words (or tokens).

    Parameters
    ----------
    samples : samples per text and target, the text itself included (samples - 1 forward evaluations).
    kernel_width : w of the kernel ``sqrt(exp(-d**2 / w**2))`` on the cosine distance d to the text.
    alpha : ridge regularisation (0: ordinary weighted least squares).
    random_state, granularity, baseline, output, batch_size : as :class:`~xai_onnx.methods.KernelShap`.
    """

    name = "lime"
    options = (*PerturbationExplainer.common_options(
        samples_option(1000, "forward evaluations per text (LIME: samples; SHAP: evaluation budget)")),
        Option("kernel_width", float, 0.25, "LIME kernel width on the cosine distance (lime's 25 on distances x 100)",
               above=0.0, maximum=1e6),
        Option("alpha", float, 1.0, "LIME ridge regularisation (0: weighted least squares)", minimum=0.0,
               maximum=1e12, field="ridge_alpha"))

    def __init__(self, model: Model, *, samples: int = 1000, random_state: int = 0, granularity: str | None = None,
                 baseline: str = "pad", output: str | None = None, batch_size: int | None = None,
                 kernel_width: float = 0.25, alpha: float = 1.0):
        super().__init__(model, samples=samples, random_state=random_state, granularity=granularity,
                         baseline=baseline, output=output, batch_size=batch_size)
        self.kernel_width = self._parse("kernel_width", kernel_width)
        self.alpha = self._parse("alpha", alpha)

    def attribute(self, items: list[Item], feats: list[Features], rngs: list[np.random.Generator]) -> list[Computed]:
        masks = [lime_masks(len(f), self.samples, rng) for f, rng in zip(feats, rngs)]
        values = self.values(items, feats, [m[1:] for m in masks])  # row 0 is x: F(x) is known
        rows = self.perturber.forward_rows
        out = []
        for it, f, m, v, n_run in zip(items, feats, masks, values, rows):
            settings: dict[str, Any] = {"forward_passes": n_run}  # distinct samples: duplicates run once
            if len(f) == 0 or m.shape[0] < 2:
                out.append(Computed(np.zeros(len(f)), None, {"local_fit_r2": None, "intercept": None}))
                continue
            y = np.concatenate([[it.output_value], v])
            coef, intercept, r2 = weighted_ridge(m.astype(np.float64), y, kernel_weights(m, self.kernel_width),
                                                 self.alpha)
            settings.update(local_fit_r2=None if np.isnan(r2) else r2, intercept=intercept)
            out.append(Computed(coef, None, settings))
        return out
