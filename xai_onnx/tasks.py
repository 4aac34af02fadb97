"""What differs per task: which inputs a model takes, what F is, which targets are explained, how results look.

The explainers stay task-free: they perturb or differentiate rows of embeddings and ask an :class:`Objective` for F
(:meth:`Objective.value` on a graph's outputs) and for the gradient graph's weight inputs that differentiate F
(:meth:`Objective.feeds`). A :class:`Task` turns user inputs into encoded rows, picks the objectives after the
forward pass, and shapes the results.

- ``sequence-classification``: one text or a (text, text_pair) couple in, ``(batch, labels)`` logits out; F is a
  label's softmax probability or logit (the sigmoid with one output: cross-encoders and regression heads, whose
  default output is the logit).
- ``token-classification``: ``(batch, sequence, labels)`` logits; a target is a position and a label.
- ``similarity``: a sentence encoder without a head; F(a, b) = cosine(E(a), E(b)), each side explained with the
  other held fixed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .errors import InputError
from .results import Target

if TYPE_CHECKING:
    from .model import Model
    from .tokenization import Encoded

TargetSpec = int | str | None


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, or the sigmoid where there is one output (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    return sigmoid(z) if z.shape[-1] == 1 else softmax(z)


def target_output(logits: np.ndarray, target: int, output: str) -> np.ndarray:
    """F for a target: its logit, or its probability (softmax; sigmoid with one output), float64 for the latter;
    shape logits.shape[:-1]."""
    if output == "logit":
        return logits[..., target]
    return probabilities(logits)[..., target]


def target_weights(targets: Sequence[int], n_labels: int, output: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gradient-graph weights (w_logit, w_prob), one one-hot row per target; the unused one is None."""
    w = np.zeros((len(targets), n_labels), dtype=np.float32)
    w[np.arange(len(targets)), list(targets)] = 1.0
    return (w, None) if output == "logit" else (None, w)


# ---- objectives --------------------------------------------------------------------------------------------------
class Objective(ABC):
    """F for one explained (input, target): read from graph outputs, and the weights that differentiate it."""

    target: Target

    @abstractmethod
    def value(self, out: dict[str, np.ndarray]) -> np.ndarray:
        """F per row of a run's outputs (``logits`` and, for similarity, ``features``): shape (rows,), float64."""

    @abstractmethod
    def feeds(self, n_rows: int, seq: int) -> dict[str, np.ndarray]:
        """The gradient graph's objective inputs for ``n_rows`` rows of ``seq`` tokens, by role."""


@dataclass
class ClassObjective(Objective):
    """A label's probability or logit (sequence classification)."""

    target: Target
    output: str
    n_labels: int

    def value(self, out: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(target_output(out["logits"].astype(np.float64), self.target.index, self.output), np.float64)

    def feeds(self, n_rows: int, seq: int) -> dict[str, np.ndarray]:
        w_logit, w_prob = target_weights([self.target.index] * n_rows, self.n_labels, self.output)
        return {k: v for k, v in (("w_logit", w_logit), ("w_prob", w_prob)) if v is not None}


@dataclass
class TokenObjective(Objective):
    """The probability (softmax over labels at the position) or logit of one label at one position."""

    target: Target
    position: int
    output: str
    n_labels: int

    def value(self, out: dict[str, np.ndarray]) -> np.ndarray:
        logits = out["logits"][:, self.position].astype(np.float64)  # (rows, labels)
        return np.asarray(target_output(logits, self.target.index, self.output), np.float64)

    def feeds(self, n_rows: int, seq: int) -> dict[str, np.ndarray]:
        w = np.zeros((n_rows, seq, self.n_labels), dtype=np.float32)
        w[:, self.position, self.target.index] = 1.0
        return {"w_logit" if self.output == "logit" else "w_prob": w}


@dataclass
class SimilarityObjective(Objective):
    """cosine(E(x), other), with ``other`` the other text's embedding, held fixed."""

    target: Target
    other: np.ndarray  # (features,)
    side: int  # 0: explaining the first text, 1: the second

    def value(self, out: dict[str, np.ndarray]) -> np.ndarray:
        if "features" not in out:  # the gradient graph computes the cosine itself: (rows, 1)
            return out["logits"][:, 0].astype(np.float64)
        e = out["features"].astype(np.float64)  # (rows, features)
        o = self.other.astype(np.float64)
        denom = np.maximum(np.linalg.norm(e, axis=-1) * np.linalg.norm(o), 1e-12)
        return (e @ o) / denom

    def feeds(self, n_rows: int, seq: int) -> dict[str, np.ndarray]:
        return {"other": np.repeat(self.other[None].astype(np.float32), n_rows, axis=0)}


# ---- explained units ---------------------------------------------------------------------------------------------
@dataclass
class Unit:
    """One encoded row sequence to explain for one objective; ``group`` joins the units of one result."""

    encoded: Encoded
    objective: Objective
    group: int
    position: int | None = None


@dataclass
class Inputs:
    """What a user asked to explain: texts, optional pair texts (same count)."""

    texts: list[str]
    pairs: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def normalise_inputs(texts: Any, text_pairs: Sequence[str] | None = None) -> Inputs:
    """``["a", "b"]``, ``[("premise", "hypothesis"), ...]``, or texts with ``text_pairs`` -> :class:`Inputs`."""
    if texts is None:
        raise InputError("texts is None: give a list of strings (or of (text, text_pair) couples)")
    if isinstance(texts, str):
        raise InputError("texts must be a sequence of strings, not one string: wrap it in a list")
    if isinstance(texts, (dict, set)) or not isinstance(texts, Sequence) and not hasattr(texts, "__iter__"):
        raise InputError(f"texts must be a list of strings, got {type(texts).__name__}")
    items = list(texts)
    if items and all(isinstance(t, (tuple, list)) for t in items):
        if text_pairs is not None:
            raise InputError("give pairs either as (text, text_pair) couples or with text_pairs, not both")
        if not all(len(t) == 2 for t in items):
            raise InputError("each pair must be a (text, text_pair) couple of two strings")
        firsts, seconds = [t[0] for t in items], [t[1] for t in items]
        for name, seq in (("texts", firsts), ("text_pairs", seconds)):
            for i, t in enumerate(seq):
                if not isinstance(t, str):
                    raise InputError(f"{name}[{i}] is {type(t).__name__}, not str")
        return Inputs(firsts, seconds)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InputError(f"texts[{i}] is {type(t).__name__}, not str")
    if text_pairs is not None:
        if isinstance(text_pairs, str):
            raise InputError("text_pairs must be a sequence of strings, not one string: wrap it in a list")
        pairs = list(text_pairs)
        if len(pairs) != len(items):
            raise InputError(f"{len(items)} texts and {len(pairs)} text pairs: give one text pair per text")
        for i, t in enumerate(pairs):
            if not isinstance(t, str):
                raise InputError(f"text_pairs[{i}] is {type(t).__name__}, not str")
        return Inputs(items, pairs)
    return Inputs(items)


# ---- tasks -------------------------------------------------------------------------------------------------------
class Task(ABC):
    name: ClassVar[str]

    def __init__(self, model: Model):
        self.model = model

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.manifest.labels

    # outputs
    def default_output(self) -> str:
        return "prob"

    def check_output(self, output: str | None) -> str:
        return self.default_output() if output is None else output

    # inputs
    def encode(self, inputs: Inputs) -> list[Encoded]:
        return self.model.tokenizer.encode(inputs.texts, inputs.pairs)

    def check_target(self, target: TargetSpec) -> None:
        if target is not None and not (isinstance(target, str) and target == "all"):
            self.model.resolve_target(target)

    def _classes(self, target: TargetSpec, predicted: int) -> list[int]:
        if target is None:
            return [predicted]
        if isinstance(target, str) and target == "all":
            return list(range(len(self.labels)))
        return [self.model.resolve_target(target)]

    @abstractmethod
    def units(self, encoded: list[Encoded], outs: list[dict[str, np.ndarray]], target: TargetSpec, output: str,
              **options: Any) -> list[Unit]:
        """The units to explain, from the encoded inputs and their forward outputs (one row each)."""


class SequenceClassification(Task):
    name = "sequence-classification"

    def default_output(self) -> str:
        return "logit" if len(self.labels) == 1 else "prob"

    def units(self, encoded, outs, target, output, **options):
        units = []
        for i, (e, out) in enumerate(zip(encoded, outs)):
            logits = out["logits"][0]
            for t in self._classes(target, int(np.argmax(logits))):
                units.append(Unit(e, ClassObjective(Target(t, self.labels[t]), output, len(self.labels)), i))
        return units


POSITION_CHOICES = ("entities", "all")


def parse_positions(spec: Any) -> str | list[int]:
    """``"entities"``, ``"all"``, ``"3,5"``, or a list of ints -> "entities" | "all" | sorted unique positions."""
    if spec is None:
        return "entities"
    if isinstance(spec, str):
        if spec in POSITION_CHOICES:
            return spec
        parts = [p.strip() for p in spec.split(",")]
        if not parts or not all(p.isdigit() for p in parts):
            raise InputError(f"positions must be 'entities', 'all' or token positions like '1,4'; got {spec!r}")
        return sorted({int(p) for p in parts})
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(p, int) and not isinstance(p, bool) for p in spec):
        if any(p < 0 for p in spec):
            raise InputError("positions must be >= 0")
        return sorted(set(spec))
    raise InputError(f"positions must be 'entities', 'all' or a list of token positions; got {spec!r}")


class TokenClassification(Task):
    name = "token-classification"

    def outside_label(self, outside: str | None) -> int | None:
        if outside is not None:
            if outside not in self.labels:
                raise InputError(f"outside label {outside!r} is not a label of this model; labels are {list(self.labels)}")
            return self.labels.index(outside)
        return self.labels.index("O") if "O" in self.labels else None

    def units(self, encoded, outs, target, output, positions: Any = None, outside: str | None = None, **options):
        spec = parse_positions(positions)
        outside_index = self.outside_label(outside) if spec == "entities" else None
        if spec == "entities" and outside_index is None:
            raise InputError(f"this model's labels {list(self.labels)} have no 'O': name the outside label with "
                             "--outside LABEL, or give --positions all or a list")
        units = []
        for i, (e, out) in enumerate(zip(encoded, outs)):
            logits = out["logits"][0]  # (seq, labels)
            predicted = logits.argmax(-1)
            candidates = [p for p in range(len(e)) if not e.special[p]]
            if spec == "entities":
                chosen = [p for p in candidates if int(predicted[p]) != outside_index]
            elif spec == "all":
                chosen = candidates
            else:
                assert isinstance(spec, list)
                bad = [p for p in spec if p >= len(e)]
                if bad:
                    raise InputError(f"position(s) {bad} out of range: text {i} has {len(e)} tokens (0 to {len(e) - 1})")
                chosen = list(spec)
            for p in chosen:
                for t in self._classes(target, int(predicted[p])):
                    units.append(Unit(e, TokenObjective(Target(t, self.labels[t]), p, output, len(self.labels)), i, p))
        return units


class Similarity(Task):
    name = "similarity"

    def default_output(self) -> str:
        return "logit"

    def check_output(self, output: str | None) -> str:
        if output not in (None, "logit"):
            raise InputError("a similarity bundle explains the cosine itself: output must be 'logit' (the default)")
        return "logit"

    def check_target(self, target: TargetSpec) -> None:
        if target is not None:
            raise InputError("a similarity bundle has no labels to target: leave target unset")

    @property
    def labels(self) -> tuple[str, ...]:
        return ("similarity",)

    def encode(self, inputs: Inputs) -> list[Encoded]:
        """Each text of a pair encoded on its own (the encoder embeds them separately): 2 per pair, a then b."""
        if inputs.pairs is None:
            raise InputError("a similarity bundle compares two texts: give text pairs (--text-pair, JSONL text_pair, "
                             "or (a, b) couples in Python)")
        both = self.model.tokenizer.encode(inputs.texts + inputs.pairs)
        n = len(inputs.texts)
        return [x for k in range(n) for x in (both[k], both[n + k])]

    def units(self, encoded, outs, target, output, **options):
        units = []
        for k in range(0, len(encoded), 2):
            ea, eb = encoded[k], encoded[k + 1]
            fa, fb = outs[k]["features"][0], outs[k + 1]["features"][0]
            t = Target(0, "similarity")
            units.append(Unit(ea, SimilarityObjective(t, fb, 0), k // 2))
            units.append(Unit(eb, SimilarityObjective(t, fa, 1), k // 2))
        return units


TASK_CLASSES: dict[str, type[Task]] = {c.name: c for c in (SequenceClassification, TokenClassification, Similarity)}


def task_for(model: Model) -> Task:
    return TASK_CLASSES[model.manifest.task](model)
