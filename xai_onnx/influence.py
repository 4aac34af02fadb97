"""Influential training instances: TracIn restricted to the classification head, and kNN in feature space.

The loss gradient of example i with respect to the head ``(W, b)`` is ``(p_i - y_i) (x) [f_i, 1]``, so the dot product
of two such gradients factorises as ``((p_i - y_i) . (p_j - y_j)) * (f_i . f_j + 1)``: nothing of size
labels x features is ever built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .io import split_lines
from .labels import label_indices
from .model import Model, softmax

INDEX_FORMAT = 1


@dataclass(frozen=True)
class Neighbour:
    index: int
    text: str
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "label": self.label, "score": self.score}


@dataclass(frozen=True)
class InfluenceResult:
    """For one test text: the training examples that most support (proponents) and oppose (opponents) its
    prediction, or, with mode="knn", the nearest ones by cosine similarity of features."""

    text: str
    label: str
    mode: str
    proponents: tuple[Neighbour, ...]
    opponents: tuple[Neighbour, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "mode": self.mode,
                "proponents": [n.to_dict() for n in self.proponents], "opponents": [n.to_dict() for n in self.opponents]}


class InfluenceIndex:
    """Fit on labelled training texts; query test texts for their most influential training examples.

    Learned attributes: ``features_`` (n, feature_dim), ``residuals_`` (n, labels) = p - onehot(y), ``labels_`` (n,),
    ``texts_``.
    """

    def __init__(self, model: Model, *, k: int = 5):
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        model.require_features("influence")
        self.model = model
        self.k = k

    def fit(self, texts: Sequence[str], labels: Sequence[str | int | None]) -> InfluenceIndex:
        if len(texts) == 0:
            raise InputError("the training set is empty")
        if len(texts) != len(labels):
            raise InputError(f"{len(texts)} texts but {len(labels)} labels")
        y = label_indices(labels, self.model.labels)
        logits, feats = self.model.forward_encoded(self.model.encode(texts))
        self._set(list(texts), y, feats.astype(np.float32), softmax(logits.astype(np.float64)))
        return self

    def _set(self, texts: list[str], y: np.ndarray, feats: np.ndarray, probs: np.ndarray) -> None:
        self.texts_ = texts
        self.labels_ = y
        self.features_ = feats
        self.residuals_ = (probs - np.eye(len(self.model.labels))[y]).astype(np.float32)

    def _check_fitted(self) -> None:
        if not hasattr(self, "features_"):
            raise InputError("the index is not fitted: call fit() or load() first")

    # ---- influence ---------------------------------------------------------------------------------------------
    def self_influence(self) -> np.ndarray:
        """Each training example's influence on itself, ``|p - y|^2 (|f|^2 + 1)``: shape (n,). High = suspicious."""
        self._check_fitted()
        r = self.residuals_.astype(np.float64)
        f = self.features_.astype(np.float64)
        return (r * r).sum(1) * ((f * f).sum(1) + 1.0)

    def scores(self, texts: Sequence[str], labels: Sequence[str | int] | None = None) -> np.ndarray:
        """TracIn-last-layer influence of every training example on each text's loss: shape (n_texts, n_train).

        The test label is the predicted one unless ``labels`` are given. Positive = the training example's
        gradient step lowers the test loss (a proponent)."""
        self._check_fitted()
        logits, feats = self.model.forward_encoded(self.model.encode(texts))
        return self._tracin(logits, feats, label_indices(labels, self.model.labels) if labels is not None else None)

    def _tracin(self, logits: np.ndarray, feats: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        probs = softmax(logits.astype(np.float64))
        y = probs.argmax(1) if y is None else y
        r_test = probs - np.eye(len(self.model.labels))[y]
        return (r_test @ self.residuals_.T.astype(np.float64)) * (feats.astype(np.float64) @ self.features_.T + 1.0)

    def query(self, texts: Sequence[str], *, k: int | None = None, mode: str = "tracin") -> list[InfluenceResult]:
        """Top-k proponents and opponents (mode ``tracin``), or nearest and farthest by cosine (``knn``)."""
        self._check_fitted()
        k = min(k or self.k, len(self.texts_))
        if mode not in ("tracin", "knn"):
            raise InputError(f"mode must be 'tracin' or 'knn', got {mode!r}")
        logits, feats = self.model.forward_encoded(self.model.encode(texts))  # one pass serves scores and labels
        if mode == "tracin":
            s = self._tracin(logits, feats, None)
        else:
            f = feats.astype(np.float64)
            a = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
            b = self.features_ / np.maximum(np.linalg.norm(self.features_, axis=1, keepdims=True), 1e-12)
            s = a @ b.T
        out = []
        for text, row, lg in zip(texts, s, logits):
            order = np.argsort(-row, kind="stable")
            out.append(InfluenceResult(text, self.model.labels[int(np.argmax(lg))], mode,
                                       self._neighbours(order[:k], row), self._neighbours(order[::-1][:k], row)))
        return out

    def _neighbours(self, idx: np.ndarray, row: np.ndarray) -> tuple[Neighbour, ...]:
        return tuple(Neighbour(int(i), self.texts_[i], self.model.labels[self.labels_[i]], float(row[i])) for i in idx)

    # ---- persistence -------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "index.npz", features=self.features_, residuals=self.residuals_, labels=self.labels_)
        meta = {"format": INDEX_FORMAT, "labels": list(self.model.labels), "bundle_architecture":
                self.model.manifest.architecture, "feature_dim": int(self.features_.shape[1]), "n": len(self.texts_)}
        (d / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        (d / "texts.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in self.texts_),
                                       encoding="utf-8")

    @classmethod
    def load(cls, model: Model, directory: str | Path, *, k: int = 5) -> InfluenceIndex:
        d = Path(directory)
        try:
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
            with np.load(d / "index.npz", allow_pickle=False) as z:
                feats, res, y = z["features"], z["residuals"], z["labels"]
            # split on "\n" only: a text may hold U+2028, U+2029, U+0085 or a form feed, which splitlines() splits on
            texts = [json.loads(ln)["text"] for ln in split_lines((d / "texts.jsonl").read_text(encoding="utf-8"))]
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot load the influence index in {d} ({exc}): fit it again") from exc
        if meta.get("format") != INDEX_FORMAT or meta.get("labels") != list(model.labels) or \
                feats.shape[1] != model.manifest.feature_dim:
            raise InputError(f"the influence index in {d} was built for another model: fit it again")
        idx = cls(model, k=k)
        idx.texts_, idx.labels_, idx.features_, idx.residuals_ = texts, y, feats, res
        return idx
