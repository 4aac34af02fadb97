"""Partition SHAP: Owen values over a hierarchy of contiguous word spans, shap's default explainer for text.

The features (words or tokens) are split recursively into two contiguous spans: at a segment boundary first, then
after punctuation (``, . ; : ! ?``), then between words, and only last between the pieces of one word; among equal
boundaries, the one nearest the middle. Then, as shap's Partition explainer (``owen``): a node holding the
coalition change from ``m00`` (F = f00) to ``m00 + node`` (F = f11) is *expanded* by evaluating its left child
added alone (f10) and its right child added alone (f01); each child inherits half the node's weight in each of two
contexts (the other child absent, or present). Expansions go largest ``|f11 - f00| * weight`` first, until the
budget is spent; a node left unexpanded gives ``(f11 - f00) * weight`` to its features in equal parts. Every step
splits a difference exactly, so the scores always sum to ``F(x) - F(every feature masked)``; expanded fully, they
are the Owen values of the hierarchy (the Shapley values where F is additive).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model import Model
from ..perturbation import Features
from ..registry import register
from .agnostic import PerturbationExplainer, samples_option
from .base import Computed, Item

PUNCTUATION = ",.;:!?"
EXPANSIONS_PER_ROUND = 16  # a text's expansions evaluated together (shap: batch_size 10)


@dataclass(frozen=True)
class Tree:
    """Binary hierarchy over M features: nodes 0..M-1 are the features, node k >= M has children[k - M] and covers
    features lo[k]..hi[k]-1; the root is the last node (or feature 0 when M == 1)."""

    M: int
    children: tuple[tuple[int, int], ...]
    lo: tuple[int, ...]
    hi: tuple[int, ...]

    @property
    def root(self) -> int:
        return self.M + len(self.children) - 1


def boundary_strengths(feats: Features) -> np.ndarray:
    """Strength of the boundary before feature k (k = 1..M-1; index 0 unused): 3 segment, 2 after punctuation,
    1 between words, 0 inside a word."""
    enc = feats.encoded
    M = len(feats)
    out = np.zeros(M, dtype=np.int64)
    segments = enc.segment_ids()
    for k in range(1, M):
        a, b = feats.positions[k - 1][-1], feats.positions[k][0]
        prev_text = feats.text(k - 1)
        if segments[a] != segments[b] or enc.special[a:b].any():
            out[k] = 3
        elif prev_text and prev_text[-1] in PUNCTUATION:
            out[k] = 2
        elif b == a + 1 and enc.offsets[a][1] == enc.offsets[b][0]:
            out[k] = 0
        else:
            out[k] = 1
    return out


def build_tree(feats: Features) -> Tree:
    M = len(feats)
    strength = boundary_strengths(feats)
    children: list[tuple[int, int]] = []
    lo = list(range(M))
    hi = list(range(1, M + 1))

    def split(a: int, b: int) -> int:
        if b - a == 1:
            return a
        cand = np.arange(a + 1, b)
        best = strength[cand].max()
        ks = cand[strength[cand] == best]
        k = int(ks[np.argmin(np.abs(ks - (a + b) / 2.0))])
        left, right = split(a, k), split(k, b)
        children.append((left, right))
        lo.append(a)
        hi.append(b)
        return M + len(children) - 1

    if M:
        split(0, M)
    return Tree(M, tuple(children), tuple(lo), tuple(hi))


@dataclass
class _State:
    tree: Tree
    rng: np.random.Generator
    budget: int
    heap: list[tuple[float, float, int, bytes, float, float, float]] = field(default_factory=list)
    dvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cache: dict[bytes, float] = field(default_factory=dict)
    evaluations: int = 0
    done: bool = False
    exact: bool = True  # no node was left unexpanded

    def push(self, node: int, m00: np.ndarray, f00: float, f11: float, weight: float) -> None:
        heapq.heappush(self.heap, (-abs(f11 - f00) * weight, float(self.rng.random()), node, m00.tobytes(), f00, f11,
                                   weight))

    def finish(self) -> None:
        while self.heap:
            _, _, node, _, f00, f11, weight = heapq.heappop(self.heap)
            self.dvalues[node] += (f11 - f00) * weight
            self.exact = self.exact and node < self.tree.M
        self.done = True

    def scores(self) -> np.ndarray:
        t = self.tree
        phi = self.dvalues[:t.M].copy()
        for k in range(t.M, t.M + len(t.children)):  # an internal node's credit goes to its features in equal parts
            phi[t.lo[k]:t.hi[k]] += self.dvalues[k] / (t.hi[k] - t.lo[k])
        return phi


@register
class PartitionShap(PerturbationExplainer):
    """Owen values of words (or tokens) over a hierarchy of contiguous spans, as shap's Partition explainer.

    Parameters
    ----------
    samples : forward evaluations per text and target (F(x) is known; F with every feature masked is the first).
    random_state : seed of the tie-breaking between expansions of equal priority.
    granularity, baseline, output, batch_size : as :class:`~xai_onnx.methods.KernelShap`.

    Results: ``baseline_value`` is F(every feature masked), ``convergence_delta`` ``sum(scores) - (F(x) -
    baseline_value)`` (zero up to rounding at any budget), settings record ``evaluations`` and ``exact`` (every node
    expanded: the Owen values).
    """

    name = "partition_shap"
    options = PerturbationExplainer.common_options(
        samples_option(500, "forward evaluations per text (LIME: samples; SHAP: evaluation budget)"))

    def __init__(self, model: Model, *, samples: int = 500, random_state: int = 0, granularity: str | None = None,
                 baseline: str = "pad", output: str | None = None, batch_size: int | None = None):
        super().__init__(model, samples=samples, random_state=random_state, granularity=granularity,
                         baseline=baseline, output=output, batch_size=batch_size)

    def attribute(self, items: list[Item], feats: list[Features], rngs: list[np.random.Generator]) -> list[Computed]:
        states = []
        for f, rng in zip(feats, rngs):
            tree = build_tree(f)
            states.append(_State(tree, rng, self.samples, dvalues=np.zeros(tree.M + len(tree.children))))
        # F with every feature masked, for every text at once
        empty = self.values(items, feats, [np.zeros((1, len(f)), dtype=bool) for f in feats])
        for st, it, v in zip(states, items, empty):
            M = st.tree.M
            if M == 0:
                st.done = True
                it.baseline_value = it.output_value
                continue
            f0 = float(v[0])
            it.baseline_value = f0
            st.evaluations = 1
            st.cache[np.zeros(M, dtype=bool).tobytes()] = f0
            st.cache[np.ones(M, dtype=bool).tobytes()] = it.output_value
            st.push(st.tree.root, np.zeros(M, dtype=bool), f0, it.output_value, 1.0)
        while not all(st.done for st in states):
            plans = [self._plan(st) for st in states]
            active = [i for i, p in enumerate(plans) if p[1]]
            values = self.values([items[i] for i in active], [feats[i] for i in active],
                                 [np.asarray(plans[i][1], dtype=bool) for i in active]) if active else []
            for i, v in zip(active, values):
                for mask, fv in zip(plans[i][1], v):
                    states[i].cache[mask.tobytes()] = float(fv)
                states[i].evaluations += len(plans[i][1])
            for st, (expansions, _) in zip(states, plans):
                for node, m00, f00, f11, weight in expansions:
                    left, right = st.tree.children[node - st.tree.M]
                    m10, m01 = self._add(st.tree, m00, left), self._add(st.tree, m00, right)
                    f10, f01 = st.cache[m10.tobytes()], st.cache[m01.tobytes()]
                    half = weight / 2.0
                    st.push(left, m00, f00, f10, half)
                    st.push(right, m00, f00, f01, half)
                    st.push(left, m01, f01, f11, half)
                    st.push(right, m10, f10, f11, half)
        out = []
        for st, it in zip(states, items):
            phi = st.scores()
            assert it.baseline_value is not None
            settings: dict[str, Any] = {"evaluations": st.evaluations, "exact": st.exact}
            out.append(Computed(phi, float(phi.sum() - (it.output_value - it.baseline_value)), settings))
        return out

    @staticmethod
    def _add(tree: Tree, m00: np.ndarray, node: int) -> np.ndarray:
        m = m00.copy()
        m[tree.lo[node]:tree.hi[node]] = True
        return m

    def _plan(self, st: _State) -> tuple[list[tuple[int, np.ndarray, float, float, float]], list[np.ndarray]]:
        """Pop this round's expansions: (node, m00, f00, f11, weight) and the masks to evaluate for them."""
        expansions: list[tuple[int, np.ndarray, float, float, float]] = []
        masks: list[np.ndarray] = []
        pending: set[bytes] = set()
        if st.done:
            return expansions, masks
        M = st.tree.M
        while st.heap and len(expansions) < EXPANSIONS_PER_ROUND:
            entry = st.heap[0]
            _, _, node, key, f00, f11, weight = entry
            if node < M:  # a feature: its credit is final
                heapq.heappop(st.heap)
                st.dvalues[node] += (f11 - f00) * weight
                continue
            m00 = np.frombuffer(key, dtype=bool).copy()
            left, right = st.tree.children[node - M]
            new = [m for m in (self._add(st.tree, m00, left), self._add(st.tree, m00, right))
                   if m.tobytes() not in st.cache and m.tobytes() not in pending]
            if st.evaluations + len(masks) + len(new) > st.budget:
                break
            heapq.heappop(st.heap)
            for m in new:
                pending.add(m.tobytes())
                masks.append(m)
            expansions.append((node, m00, f00, f11, weight))
        if not expansions:
            st.finish()
        return expansions, masks
