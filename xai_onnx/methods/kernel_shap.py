"""KernelSHAP (Lundberg & Lee 2017): Shapley values of words (or tokens) from a weighted regression on coalitions.

With M features, a coalition of size s carries the Shapley kernel weight ``(M - 1) / (C(M, s) s (M - s))``. When
every coalition fits in the budget (``2**M - 1 <= samples``: the full coalition is F(x) itself, known) the Shapley
values are computed exactly from all of them. Otherwise:

- size classes are enumerated completely from the outside in (sizes 1 and M-1, then 2 and M-2, ...) while their
  coalitions fit in their share of the budget (shap's KernelExplainer does the same);
- the remaining budget is split over the remaining sizes in proportion to their kernel mass (stratified, where shap
  draws each sample's size at random), coalitions are drawn without replacement within a size and always with their
  complement (paired, antithetic sampling), and each carries its size's mass divided by the number drawn;
- the weighted least-squares fit is solved with efficiency as a constraint (one coefficient eliminated), so the
  scores sum exactly to ``F(x) - F(every feature masked)``.
"""

from __future__ import annotations

from math import comb, factorial
from typing import Any

import numpy as np

from ..model import Model
from ..perturbation import Features
from ..registry import register
from .agnostic import PerturbationExplainer, samples_option
from .base import Computed, Item

MAX_EXACT_FEATURES = 20  # 2**20 coalitions: above, exact mode would need more memory than a budget can ask for


def shapley_weights(M: int) -> np.ndarray:
    """w[s] = s! (M - s - 1)! / M!, the weight of a coalition of size s in a feature's marginal contributions."""
    return np.array([factorial(s) * factorial(M - s - 1) / factorial(M) for s in range(M)])


def all_masks(M: int) -> np.ndarray:
    """Every coalition as rows of booleans (2**M, M); row k is the binary expansion of k (feature j = bit j)."""
    k = np.arange(2**M, dtype=np.int64)
    return ((k[:, None] >> np.arange(M)) & 1).astype(bool)


def exact_shapley(values: np.ndarray, M: int) -> np.ndarray:
    """Shapley values from F of every coalition, ``values[k]`` for the coalition with bit pattern k: (M,)."""
    k = np.arange(2**M, dtype=np.int64)
    size = np.zeros(2**M, dtype=np.int64)
    for j in range(M):
        size += (k >> j) & 1
    w = shapley_weights(M) if M else np.zeros(0)
    phi = np.zeros(M)
    for j in range(M):
        without = k[((k >> j) & 1) == 0]
        phi[j] = float(np.sum(w[size[without]] * (values[without | (1 << j)] - values[without])))
    return phi


def _draw(M: int, s: int, n: int, rng: np.random.Generator, taken: set[bytes], paired_same_size: bool) -> list[np.ndarray]:
    """n coalitions of size s, distinct and not in ``taken`` (complements included when ``paired_same_size``)."""
    out: list[np.ndarray] = []
    attempts = 0
    while len(out) < n and attempts < 50 * n + 100:  # n is below the class size (else it was enumerated)
        attempts += 1
        z = np.zeros(M, dtype=bool)
        z[rng.choice(M, size=s, replace=False)] = True
        key = z.tobytes()
        if key in taken:
            continue
        taken.add(key)
        out.append(z)
        if paired_same_size:
            taken.add((~z).tobytes())
    return out


def kernel_design(M: int, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions to evaluate (n, M) and their regression weights (n,), at most ``budget`` rows, neither the empty
    nor the full coalition among them (both are known or evaluated apart)."""
    sizes = list(range(1, M))
    mass = {s: 1.0 / (s * (M - s)) for s in sizes}  # total kernel mass of size s, up to a constant
    rows: list[np.ndarray] = []
    weights: list[float] = []
    left = budget
    pairs = [(s, M - s) for s in range(1, M // 2 + 1)]
    remaining = list(pairs)
    every = all_masks(M) if M <= 16 else None
    # enumerate whole size classes from the outside in while they fit in their share of the budget
    while remaining:
        s, t = remaining[0]
        need = comb(M, s) * (1 if s == t else 2)
        share = sum(mass[s] + (mass[t] if t != s else 0.0) for s, t in remaining)
        this = (mass[s] + (mass[t] if t != s else 0.0)) / share
        if need > left * this + 1e-9:
            break
        for size in ((s,) if s == t else (s, t)):
            zs = list(every[every.sum(1) == size]) if every is not None else _combinations(M, size)
            rows.extend(zs)
            weights.extend([mass[size] / comb(M, size)] * len(zs))
        left -= need
        remaining.pop(0)
    # stratified paired sampling over the sizes left
    if remaining and left >= 2:
        share = sum(mass[s] + (mass[t] if t != s else 0.0) for s, t in remaining)
        taken: set[bytes] = set()
        alloc = [int(left * (mass[s] + (mass[t] if t != s else 0.0)) / share) // 2 for s, t in remaining]
        spare = left // 2 - sum(alloc)
        for k in np.argsort([-(mass[s] + mass[t]) for s, t in remaining])[:max(spare, 0)]:
            alloc[int(k)] += 1  # the pairs the rounding left over go to the heaviest sizes
        for (s, t), n_pairs in zip(remaining, alloc):
            if n_pairs == 0:
                continue
            drawn = _draw(M, s, n_pairs, rng, taken, paired_same_size=(s == t))
            if not drawn:
                continue
            if s == t:
                zs = [z for d in drawn for z in (d, ~d)]
                weights.extend([mass[s] / len(zs)] * len(zs))
                rows.extend(zs)
            else:
                rows.extend(drawn)
                rows.extend(~d for d in drawn)
                weights.extend([mass[s] / len(drawn)] * len(drawn))
                weights.extend([mass[t] / len(drawn)] * len(drawn))
    if not rows:
        return np.zeros((0, M), dtype=bool), np.zeros(0)
    return np.asarray(rows, dtype=bool), np.asarray(weights, dtype=np.float64)


def _combinations(M: int, size: int) -> list[np.ndarray]:
    from itertools import combinations

    out = []
    for c in combinations(range(M), size):
        z = np.zeros(M, dtype=bool)
        z[list(c)] = True
        out.append(z)
    return out


def solve_efficient(masks: np.ndarray, weights: np.ndarray, y: np.ndarray, total: float) -> np.ndarray:
    """Weighted least squares ``y ~ masks @ phi`` subject to ``sum(phi) == total`` (y already minus F(empty))."""
    M = masks.shape[1]
    if M == 1:
        return np.array([total])
    z = masks.astype(np.float64)
    X = z[:, :-1] - z[:, -1:]  # phi_M = total - sum(phi_<M) eliminated
    target = y - z[:, -1] * total
    sw = np.sqrt(weights)
    coef, *_ = np.linalg.lstsq(X * sw[:, None], target * sw, rcond=None)
    return np.append(coef, total - coef.sum())


@register
class KernelShap(PerturbationExplainer):
    """Shapley values of words (or tokens) by KernelSHAP; exact when every coalition fits in ``samples``.

    Parameters
    ----------
    samples : forward evaluations per text and target (the empty coalition included; F(x) is known).
    random_state : seed; the same seed gives the same scores.
    granularity : ``"word"`` (default) or ``"token"``.
    baseline : how a masked feature is removed: ``pad`` (default), ``mask``, ``unk``, ``zero`` or ``delete``.

    Results: ``baseline_value`` is F(every feature masked), ``convergence_delta`` is
    ``sum(scores) - (F(x) - baseline_value)`` (zero up to rounding: efficiency is enforced), and settings record
    ``exact`` and ``evaluations``.
    """

    name = "kernel_shap"
    options = PerturbationExplainer.common_options(
        samples_option(1000, "forward evaluations per text (LIME: samples; SHAP: evaluation budget)"))

    def __init__(self, model: Model, *, samples: int = 1000, random_state: int = 0, granularity: str | None = None,
                 baseline: str = "pad", output: str | None = None, batch_size: int | None = None):
        super().__init__(model, samples=samples, random_state=random_state, granularity=granularity,
                         baseline=baseline, output=output, batch_size=batch_size)

    def attribute(self, items: list[Item], feats: list[Features], rngs: list[np.random.Generator]) -> list[Computed]:
        plans: list[tuple[bool, np.ndarray, np.ndarray]] = []
        requests = []
        for f, rng in zip(feats, rngs):
            M = len(f)
            exact = M <= MAX_EXACT_FEATURES and 2**M - 1 <= self.samples
            if exact:
                masks = all_masks(M)[:-1]  # every coalition but the full one
                weights = np.zeros(0)
            else:
                design, weights = kernel_design(M, self.samples - 1, rng)
                masks = np.concatenate([np.zeros((1, M), dtype=bool), design])  # row 0: the empty coalition
            plans.append((exact, masks, weights))
            requests.append(masks)
        values = self.values(items, feats, requests)
        out = []
        for it, f, (exact, masks, weights), v in zip(items, feats, plans, values):
            M = len(f)
            f0 = float(v[0]) if M else it.output_value
            it.baseline_value = f0
            total = it.output_value - f0
            if M == 0:
                phi = np.zeros(0)
            elif exact:
                phi = exact_shapley(np.append(v, it.output_value), M)
            elif masks.shape[0] == 1:  # a budget too small for any coalition: efficiency alone
                phi = np.full(M, total / M)
            else:
                phi = solve_efficient(masks[1:], weights, v[1:] - f0, total)
            settings: dict[str, Any] = {"exact": bool(exact), "evaluations": int(masks.shape[0])}
            out.append(Computed(phi, float(phi.sum() - total), settings))
        return out
