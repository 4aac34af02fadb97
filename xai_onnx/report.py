"""A model-debugging report over a labelled corpus: accuracy, errors with their attributions, the tokens that push
towards each class, and (with training data) prototypes, criticisms and influential training examples for errors."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .adversarial import STOP_WORDS as ADVERSARIAL_STOP_WORDS
from .errors import InputError
from .influence import InfluenceIndex
from .labels import label_indices
from .methods import METHODS, IntegratedGradients
from .model import Model
from .prototypes import MMDCritic

#: left out of the class words by default (``keep_stop_words`` keeps them); negations stay: they carry sentiment
STOP_WORDS = frozenset((ADVERSARIAL_STOP_WORDS - {"no", "nor", "not", "n't", "against"}) | set(
    "as also although because could even ever may might much must one ones shall since still though unless until "
    "upon whether while would yet 'll 're 've 'd 'm".split()))


def words(r: Any) -> list[tuple[str, float]]:
    """(word, score) for each whole word of an attribution: word pieces that touch with letters or digits on both sides
    are summed into one word (``bor`` + ``##ed`` -> ``bored``); punctuation stays a word of its own; special tokens
    are dropped. Words are lower-cased."""
    out: list[tuple[int, int, float]] = []
    text = r.text
    for (a, b), s in zip(r.offsets, r.scores):
        if a == b:
            continue
        if out and a == out[-1][1] and a > 0 and text[a - 1].isalnum() and text[a].isalnum():
            start, _, acc = out[-1]
            out[-1] = (start, b, acc + float(s))
        else:
            out.append((a, b, float(s)))
    return [(text[a:b].lower(), s) for a, b, s in out]


def is_content_word(word: str) -> bool:
    """Not punctuation (some letter or digit) and not a stop word."""
    return any(c.isalnum() for c in word) and word not in STOP_WORDS


def class_words(results: Sequence[Any], labels: Sequence[str], *, top: int = 20, min_count: int = 3,
                keep_stop_words: bool = False) -> dict[str, list]:
    """Per class, the whole words with the highest mean attribution towards it (over the explanations whose target is
    that class), seen at least ``min_count`` times so rare words do not dominate; only words whose mean is positive
    (a word that pushes away from the class on average is not one of its words). Punctuation and stop words are
    left out unless ``keep_stop_words``."""
    sums: dict[str, dict[str, float]] = {lab: defaultdict(float) for lab in labels}
    counts: dict[str, dict[str, int]] = {lab: defaultdict(int) for lab in labels}
    for r in results:
        cls = r.target.label
        for word, s in words(r):
            if not keep_stop_words and not is_content_word(word):
                continue
            sums[cls][word] += s
            counts[cls][word] += 1
    out = {}
    for lab in labels:
        rows = [(w, sums[lab][w] / c, c) for w, c in counts[lab].items() if c >= min_count and sums[lab][w] > 0]
        rows.sort(key=lambda x: (-x[1], x[0]))
        out[lab] = [{"word": w, "mean_score": m, "count": c} for w, m, c in rows[:top]]
    return out


def debug_report(model: Model, texts: Sequence[str], labels: Sequence[str | int | None], *,
                 train: tuple[Sequence[str], Sequence[str | int | None]] | None = None, method: str | None = None,
                 n_errors: int = 5, top_tokens: int = 20, min_count: int = 3, n_prototypes: int = 5,
                 n_criticisms: int = 3, k: int = 3, progress: Callable[[str], None] | None = None,
                 keep_stop_words: bool = False) -> dict[str, Any]:
    """The report as a JSON-ready dict. ``misclassified`` is ordered worst first (the wrong class's probability, highest
    first); each keeps ``index``, its position in ``texts``. With ``train``, the first ``n_errors`` of them get their
    proponents, opponents and nearest prototypes (``evidence``)."""
    model.require_sequence_classifier("report (its accuracy, errors and class words)")
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
    confidence = np.array([r.probabilities[r.prediction.label] for r in results])
    errors = errors[np.argsort(-confidence[errors], kind="stable")]  # worst (most confident) errors first
    n_labels = len(model.labels)
    confusion = np.zeros((n_labels, n_labels), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    report: dict[str, Any] = {
        "n": len(texts), "accuracy": float((pred == y).mean()), "labels": list(model.labels),
        "confusion": {"rows_true_columns_predicted": confusion.tolist()}, "method": method,
        "explainer_settings": explainer.settings(),
        "misclassified": [{"index": int(i), "gold_label": model.labels[y[i]], **results[i].to_dict()} for i in errors],
        "class_words": class_words(results, model.labels, top=top_tokens, min_count=min_count,
                                   keep_stop_words=keep_stop_words),
        "class_words_settings": {"min_count": min_count, "stop_words_and_punctuation": "kept" if keep_stop_words
                                 else "left out"},
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
