"""Adversarial examples: HotFlip (Ebrahimi et al. 2018) from the gradient graph, and a forward-only greedy
substitution attack for bundles without one. Candidates are always verified with real forward passes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .model import Model, RowGroup, softmax
from .tokenization import Encoded

STOP_WORDS = frozenset(
    "a an the and or but if of at by for with about against between into through during before after above below to "
    "from up down in out on off over under again further then once here there when where why how all any both each "
    "few more most other some such no nor not only own same so than too very s t can will just don should now i me my "
    "we our you your he him his she her it its they them their what which who whom this that these those am is are "
    "was were be been being have has had having do does did doing 's n't".split())


@dataclass(frozen=True)
class Flip:
    position: int
    old: str
    new: str

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class AttackResult:
    """One attacked text. ``label_after`` and ``label_before_probability_after`` come from re-tokenising
    ``adversarial_text``; the latter is the probability of the ORIGINAL label (``label_before``) after the attack, so
    that it compares with ``probability_before``, not the probability of ``label_after``."""

    text: str
    adversarial_text: str
    flips: tuple[Flip, ...]
    label_before: str
    probability_before: float
    label_after: str
    label_before_probability_after: float
    success: bool
    queries: int
    seconds: float
    method: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "adversarial_text": self.adversarial_text, "flips": [f.to_dict() for f in self.flips],
                "label_before": self.label_before, "probability_before": self.probability_before,
                "label_after": self.label_after, "label_before_probability_after": self.label_before_probability_after,
                "success": self.success, "queries": self.queries, "seconds": self.seconds, "method": self.method,
                "settings": dict(self.settings)}


class _Attack:
    method = ""

    def __init__(self, model: Model, *, max_flips: int = 3, keep_stop_words: bool = False, whole_words: bool = True,
                 protected: Sequence[int] = (), min_similarity: float | None = None):
        if max_flips < 1:
            raise InputError(f"max_flips must be >= 1, got {max_flips}")
        if min_similarity is not None and not -1 <= min_similarity <= 1:
            raise InputError(f"min_similarity must lie in [-1, 1], got {min_similarity}")
        self.model = model
        self.max_flips = max_flips
        self.keep_stop_words = keep_stop_words
        self.whole_words = whole_words
        self.protected = frozenset(int(p) for p in protected)
        self.min_similarity = min_similarity
        vocab = model.manifest.vocab_size
        tokens = [model.tokenizer.id_to_token(i) or "" for i in range(vocab)]
        self._tokens = tokens
        special_ids = {t.id for t in model.manifest.special_tokens.values()}
        allowed = np.array([bool(t) and i not in special_ids and not (t.startswith("[") and t.endswith("]"))
                            and not (t.startswith("<") and t.endswith(">")) for i, t in enumerate(tokens)])
        if whole_words:
            allowed &= np.array([t.isalpha() and not t.startswith("##") for t in tokens])
        self._allowed = allowed
        emb = np.asarray(model.embeddings, dtype=np.float32)
        self._unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def settings(self) -> dict[str, Any]:
        return {"max_flips": self.max_flips, "keep_stop_words": self.keep_stop_words, "whole_words": self.whole_words,
                "protected": sorted(self.protected), "min_similarity": self.min_similarity}

    def _positions(self, enc: Encoded) -> np.ndarray:
        ok = ~enc.special
        for i, tok in enumerate(enc.tokens):
            if i in self.protected or (self.keep_stop_words and tok.lower() in STOP_WORDS):
                ok[i] = False
            if self.whole_words and (tok.startswith("##") or (i + 1 < len(enc) and enc.tokens[i + 1].startswith("##"))):
                ok[i] = False  # a piece of a longer word: replacing it would not give a real word
        return np.flatnonzero(ok)

    def _vocab_mask(self, old_id: int) -> np.ndarray:
        mask = self._allowed.copy()
        mask[old_id] = False
        if self.min_similarity is not None:
            mask &= self._unit @ self._unit[old_id] >= self.min_similarity
        return mask

    def _probs(self, ids_rows: list[np.ndarray], type_ids: np.ndarray) -> np.ndarray:
        groups = [RowGroup(self.model.embed(np.stack(ids_rows)), type_ids)]
        return softmax(self.model.run(groups)[0]["logits"].astype(np.float64))

    def _finish(self, enc: Encoded, ids: np.ndarray, label: int, p0: float, queries: int, t0: float) -> AttackResult:
        flips, text, shift = [], enc.text, 0
        for pos in np.flatnonzero(ids != enc.ids):
            old, new = enc.tokens[pos], self._tokens[int(ids[pos])]
            flips.append(Flip(int(pos), old, new))
            a, b = enc.offsets[pos]
            piece = new[2:] if new.startswith("##") else new
            text = text[:a + shift] + piece + text[b + shift:]
            shift += len(piece) - (b - a)
        after = self.model.predict([text])[0] if flips else None
        labels = self.model.labels
        if after is None:
            lab, p_after = labels[label], p0
        else:
            lab, p_after = after.label, after.probabilities[labels[label]]
        return AttackResult(enc.text, text, tuple(flips), labels[label], p0, lab, float(p_after),
                            bool(flips) and lab != labels[label], queries + (1 if flips else 0),
                            time.perf_counter() - t0, self.method, self.settings())

    def attack(self, texts: Sequence[str]) -> list[AttackResult]:
        return [self._attack_one(e) for e in self.model.encode(texts)]

    def _attack_one(self, enc: Encoded) -> AttackResult:
        raise NotImplementedError


class HotFlip(_Attack):
    """Rank substitutions by the first-order change ``(E[v] - E[x_i]) . dF/dx_i`` of the original label's probability,
    verify the best ``candidates`` with forward passes, and keep a beam of ``beam_size`` texts, up to ``max_flips``."""

    method = "hotflip"

    def __init__(self, model: Model, *, max_flips: int = 3, beam_size: int = 3, candidates: int = 20, **constraints: Any):
        super().__init__(model, max_flips=max_flips, **constraints)
        if beam_size < 1 or candidates < 1:
            raise InputError("beam_size and candidates must be >= 1")
        model._gradient_session()
        self.beam_size, self.candidates = beam_size, candidates
        self._emb = np.asarray(model.embeddings, dtype=np.float32)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "beam_size": self.beam_size, "candidates": self.candidates}

    def _attack_one(self, enc: Encoded) -> AttackResult:
        t0 = time.perf_counter()
        p = self._probs([enc.ids], enc.type_ids)[0]
        label = int(np.argmax(p))
        queries = 1
        positions = self._positions(enc)
        beam: list[tuple[float, np.ndarray]] = [(float(p[label]), enc.ids.copy())]
        n_labels = len(self.model.labels)
        for _ in range(self.max_flips):
            if not len(positions):
                break
            w = np.zeros((len(beam), n_labels), np.float32)
            w[:, label] = 1.0
            groups = [RowGroup(self.model.embed(ids)[None], enc.type_ids, None, w[i:i + 1]) for i, (_, ids) in enumerate(beam)]
            grads = [o["grad"][0] for o in self.model.run(groups, gradient=True)]  # each (seq, dim)
            queries += len(beam)
            proposals: list[tuple[float, int, int, int]] = []  # (estimate, beam index, position, new id)
            for b, ((_, ids), g) in enumerate(zip(beam, grads)):
                free = [i for i in positions if ids[i] == enc.ids[i]]
                if not free:
                    continue
                est = g[free] @ self._emb.T - (g[free] * self._emb[ids[free]]).sum(1, keepdims=True)  # (n_free, vocab)
                for r, i in enumerate(free):
                    est[r, ~self._vocab_mask(int(ids[i]))] = np.inf
                flat = np.argsort(est, axis=None)[:self.candidates]
                for f in flat:
                    r, v = divmod(int(f), est.shape[1])
                    if np.isfinite(est[r, v]):
                        proposals.append((float(est[r, v]), b, free[r], v))
            if not proposals:
                break
            proposals.sort()
            rows = []
            for _, b, i, v in proposals[:self.candidates]:
                ids = beam[b][1].copy()
                ids[i] = v
                rows.append(ids)
            probs = self._probs(rows, enc.type_ids)
            queries += len(rows)
            order = np.argsort(probs[:, label], kind="stable")
            beam = [(float(probs[j, label]), rows[j]) for j in order[:self.beam_size]]
            if int(np.argmax(probs[order[0]])) != label:
                break
        best = beam[0][1]
        return self._finish(enc, best, label, float(p[label]), queries, t0)


class GreedySubstitution(_Attack):
    """Forward passes only: visit words in order of occlusion importance; at each, try its ``neighbours`` nearest
    vocabulary entries in embedding space (cosine) and keep the one that most lowers the label's probability."""

    method = "greedy"

    def __init__(self, model: Model, *, max_flips: int = 3, neighbours: int = 30, **constraints: Any):
        super().__init__(model, max_flips=max_flips, **constraints)
        if neighbours < 1:
            raise InputError("neighbours must be >= 1")
        self.neighbours = neighbours

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "neighbours": self.neighbours}

    def _attack_one(self, enc: Encoded) -> AttackResult:
        t0 = time.perf_counter()
        p = self._probs([enc.ids], enc.type_ids)[0]
        label = int(np.argmax(p))
        positions = self._positions(enc)
        queries = 1
        ids = enc.ids.copy()
        best_p = float(p[label])
        if len(positions):
            pad = self.model.special_id("pad")
            rows = []
            for i in positions:
                r = ids.copy()
                r[i] = pad
                rows.append(r)
            drops = best_p - self._probs(rows, enc.type_ids)[:, label]
            queries += len(rows)
            positions = positions[np.argsort(-drops, kind="stable")]
        flips = 0
        for i in positions:
            if flips >= self.max_flips:
                break
            sim = self._unit @ self._unit[ids[i]]
            sim[~self._vocab_mask(int(ids[i]))] = -np.inf
            cand = [int(v) for v in np.argsort(-sim)[:self.neighbours] if np.isfinite(sim[v])]
            if not cand:
                continue
            rows = []
            for v in cand:
                r = ids.copy()
                r[i] = v
                rows.append(r)
            probs = self._probs(rows, enc.type_ids)
            queries += len(rows)
            j = int(np.argmin(probs[:, label]))
            if probs[j, label] < best_p:
                ids, best_p = rows[j], float(probs[j, label])
                flips += 1
                if int(np.argmax(probs[j])) != label:
                    break
        return self._finish(enc, ids, label, float(p[label]), queries, t0)
