"""A model-debugging report over a labelled corpus: accuracy, errors with their attributions, the tokens that push
towards each class, and (with training data) prototypes, criticisms and influential training examples for errors."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .influence import InfluenceIndex
from .labels import label_indices
from .methods import METHODS, IntegratedGradients
from .model import Model
from .prototypes import MMDCritic


def class_tokens(results: Sequence[Any], labels: Sequence[str], *, top: int = 20, min_count: int = 3) -> dict[str, list]:
    """Per class, the tokens with the highest mean attribution towards it (explanations of that class), seen at
    least ``min_count`` times so rare tokens do not dominate."""
    sums: dict[str, dict[str, float]] = {lab: defaultdict(float) for lab in labels}
    counts: dict[str, dict[str, int]] = {lab: defaultdict(int) for lab in labels}
    for r in results:
        cls = r.target.label
        for (a, b), s in zip(r.offsets, r.scores):
            if a == b:
                continue
            tok = r.text[a:b].lower()
            sums[cls][tok] += float(s)
            counts[cls][tok] += 1
    out = {}
    for lab in labels:
        rows = [(t, sums[lab][t] / c, c) for t, c in counts[lab].items() if c >= min_count]
        rows.sort(key=lambda x: -x[1])
        out[lab] = [{"token": t, "mean_score": m, "count": c} for t, m, c in rows[:top]]
    return out


def debug_report(model: Model, texts: Sequence[str], labels: Sequence[str | int | None], *,
                 train: tuple[Sequence[str], Sequence[str | int | None]] | None = None, method: str | None = None,
                 n_errors: int = 5, top_tokens: int = 20, min_count: int = 3, n_prototypes: int = 5,
                 n_criticisms: int = 3, k: int = 3, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    if len(texts) == 0:
        raise InputError("the data set is empty")
    if len(texts) != len(labels):
        raise InputError(f"{len(texts)} texts but {len(labels)} labels")
    say = progress or (lambda _msg: None)
    y = label_indices(labels, model.labels)
    method = method or ("ig" if model.has_gradient else "occlusion")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    explainer = IntegratedGradients(model, n_steps=32) if method == "ig" else METHODS[method](model)
    say(f"explaining {len(texts)} texts with {method}")
    results = explainer.attributions(texts)
    pred = np.array([r.prediction.index for r in results])
    errors = np.flatnonzero(pred != y)
    n_labels = len(model.labels)
    confusion = np.zeros((n_labels, n_labels), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    report: dict[str, Any] = {
        "n": len(texts), "accuracy": float((pred == y).mean()), "labels": list(model.labels),
        "confusion": {"rows_true_columns_predicted": confusion.tolist()}, "method": method,
        "explainer_settings": explainer.settings(),
        "misclassified": [{"index": int(i), "true_label": model.labels[y[i]], **results[i].to_dict()} for i in errors],
        "class_tokens": class_tokens(results, model.labels, top=top_tokens, min_count=min_count),
    }
    if train is not None:
        tr_texts, tr_labels = train
        say(f"encoding {len(tr_texts)} training texts")
        index = InfluenceIndex(model, k=k).fit(tr_texts, tr_labels)
        critic = MMDCritic(n_prototypes=n_prototypes, n_criticisms=n_criticisms, per_class=True).fit(
            index.features_, index.labels_, model.labels)
        report["prototypes"] = [g.to_dict(index.texts_) for g in critic.groups_]
        chosen = errors[:n_errors]
        if len(chosen):
            infl = index.query([texts[i] for i in chosen], k=k)
            feats = model.features([texts[i] for i in chosen])
            protos = critic.prototypes_
            pf = index.features_[protos]
            for pos, (res, f) in enumerate(zip(infl, feats)):  # chosen is errors[:n_errors]: same positions
                d = np.linalg.norm(pf - f, axis=1)
                nearest = protos[np.argsort(d)[:k]]
                report["misclassified"][pos]["evidence"] = {
                    **res.to_dict(),
                    "nearest_prototypes": [{"index": int(j), "text": index.texts_[j],
                                            "label": model.labels[index.labels_[j]]} for j in nearest],
                }
        report["self_influence_top"] = [
            {"index": int(j), "text": index.texts_[j], "label": model.labels[index.labels_[j]], "score": float(s)}
            for j, s in zip(*_top(index.self_influence(), 20))]
    return report


def _top(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-values, kind="stable")[:k]
    return order, values[order]
