"""Prototypes and criticisms by MMD-critic (Kim, Khanna & Koyejo 2016) on pooled features, with an RBF kernel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

MEDIAN_SAMPLE = 2000


def median_heuristic(x: np.ndarray, random_state: int | None = 0) -> float:
    """Kernel width sigma = median pairwise Euclidean distance (on at most 2,000 points drawn with ``random_state``)."""
    if x.shape[0] > MEDIAN_SAMPLE:
        x = x[np.random.default_rng(random_state).choice(x.shape[0], MEDIAN_SAMPLE, replace=False)]
    d2 = _sq_dists(x, x)
    iu = np.triu_indices(x.shape[0], k=1)
    med = float(np.sqrt(np.median(d2[iu]))) if iu[0].size else 1.0
    return med if med > 0 else 1.0


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def rbf_kernel(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-_sq_dists(a, b) / (2.0 * sigma * sigma))


def select_prototypes(K: np.ndarray, m: int) -> np.ndarray:
    """Greedy MMD minimisation: add the point that most raises
    ``J(S) = 2/(n|S|) sum_{i, j in S} k(i, j) - 1/|S|^2 sum_{i, j in S} k(i, j)``. Returns m indices in selection order."""
    n = K.shape[0]
    colmean = K.mean(0)  # (n,)
    diag = np.diag(K).copy()
    k_to_s = np.zeros(n)  # sum_{s in S} k(s, c)
    s_sum = sum_colmean = 0.0
    chosen: list[int] = []
    available = np.ones(n, dtype=bool)
    for size in range(1, m + 1):
        j = 2.0 * (sum_colmean + colmean) / size - (s_sum + 2.0 * k_to_s + diag) / (size * size)
        j[~available] = -np.inf
        c = int(np.argmax(j))
        chosen.append(c)
        available[c] = False
        s_sum += 2.0 * k_to_s[c] + diag[c]
        sum_colmean += colmean[c]
        k_to_s += K[c]
    return np.array(chosen, dtype=np.int64)


def select_criticisms(K: np.ndarray, prototypes: np.ndarray, c: int, regularizer: str = "logdet") -> tuple[np.ndarray, np.ndarray]:
    """Greedy criticisms: maximise ``sum |witness(x)|`` plus the log-determinant of their kernel matrix (diversity).

    witness(x) = mean_i k(x, x_i) - mean_j k(x, prototype_j). Returns (indices, witness values at them)."""
    n = K.shape[0]
    witness = K.mean(0) - K[prototypes].mean(0)
    value = np.abs(witness)
    available = np.ones(n, dtype=bool)
    available[prototypes] = False
    chosen: list[int] = []
    for _ in range(c):
        gain = value.copy()
        if regularizer == "logdet":
            if chosen:
                kc = K[np.ix_(chosen, chosen)]
                kxc = K[:, chosen]  # (n, |C|)
                solved = np.linalg.solve(kc + 1e-9 * np.eye(len(chosen)), kxc.T).T
                resid = np.diag(K) - (solved * kxc).sum(1)
            else:
                resid = np.diag(K).copy()
            gain = gain + np.log(np.maximum(resid, 1e-12))
        gain[~available] = -np.inf
        if not np.isfinite(gain).any():
            break
        i = int(np.argmax(gain))
        chosen.append(i)
        available[i] = False
    idx = np.array(chosen, dtype=np.int64)
    return idx, witness[idx]


@dataclass(frozen=True)
class PrototypeGroup:
    """Prototypes and criticisms of one class (``label``) or of all examples (``label`` None). Indices into the data."""

    label: str | None
    prototypes: tuple[int, ...]
    criticisms: tuple[int, ...]
    witness: tuple[float, ...]
    sigma: float

    def to_dict(self, texts: Sequence[str] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, "prototypes": list(self.prototypes), "criticisms": list(self.criticisms),
                             "criticism_witness": list(self.witness), "sigma": self.sigma}
        if texts is not None:
            d["prototype_texts"] = [texts[i] for i in self.prototypes]
            d["criticism_texts"] = [texts[i] for i in self.criticisms]
        return d


class MMDCritic:
    """Select prototypes and criticisms from features.

    Parameters
    ----------
    n_prototypes, n_criticisms : per group (per class with ``per_class``).
    sigma : RBF kernel width; None for the median heuristic (per group).
    per_class : one group per class label given to ``fit``.
    random_state : seeds the median heuristic's subsample; the selection itself is deterministic.

    Learned: ``groups_`` (tuple of PrototypeGroup), ``prototypes_`` and ``criticisms_`` (all indices, group order).
    """

    def __init__(self, *, n_prototypes: int = 10, n_criticisms: int = 5, sigma: float | None = None,
                 per_class: bool = True, random_state: int | None = 0):
        if n_prototypes < 1 or n_criticisms < 0:
            raise InputError(f"need n_prototypes >= 1 and n_criticisms >= 0, got {n_prototypes}, {n_criticisms}")
        if sigma is not None and not sigma > 0:
            raise InputError(f"sigma must be > 0, got {sigma}")
        self.n_prototypes, self.n_criticisms, self.sigma = n_prototypes, n_criticisms, sigma
        self.per_class, self.random_state = per_class, random_state

    def fit(self, features: np.ndarray, labels: Sequence[int] | np.ndarray | None = None,
            label_names: Sequence[str] | None = None) -> MMDCritic:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise InputError(f"features must be a non-empty 2-D array, got shape {x.shape}")
        if self.per_class:
            if labels is None:
                raise InputError("per_class=True needs labels")
            y = np.asarray(labels)
            if y.shape[0] != x.shape[0]:
                raise InputError(f"{x.shape[0]} feature rows but {y.shape[0]} labels")
            parts: list[tuple[int | None, np.ndarray]] = [(int(c), np.flatnonzero(y == c)) for c in np.unique(y)]
        else:
            parts = [(None, np.arange(x.shape[0]))]
        groups = []
        for c, idx in parts:
            xs = x[idx]
            sigma = self.sigma or median_heuristic(xs, self.random_state)
            K = rbf_kernel(xs, xs, sigma)
            m = min(self.n_prototypes, len(idx))
            protos = select_prototypes(K, m)
            crit, wit = select_criticisms(K, protos, min(self.n_criticisms, len(idx) - m))
            name = None if c is None else (label_names[c] if label_names is not None else str(c))
            groups.append(PrototypeGroup(name, tuple(int(i) for i in idx[protos]), tuple(int(i) for i in idx[crit]),
                                         tuple(float(w) for w in wit), float(sigma)))
        self.groups_ = tuple(groups)
        self.prototypes_ = np.array([i for g in groups for i in g.prototypes], dtype=np.int64)
        self.criticisms_ = np.array([i for g in groups for i in g.criticisms], dtype=np.int64)
        return self
