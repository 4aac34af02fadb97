"""What every attribution method shares: targets, baselines, F(x), chunking and result assembly."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from ..model import Model, RowGroup, softmax, target_output
from ..registry import Option
from ..results import Attribution, Target
from ..tokenization import Encoded

BASELINES = ("pad", "mask", "unk", "zero")
OUTPUTS = ("prob", "logit")
TargetSpec = int | str | None

BASELINE = Option("baseline", str, "pad", "what a removed token becomes: pad, mask, unk, zero (a zero embedding) or a "
                  "baseline text whose tokens fill the positions in order", choices=BASELINES, open_choices=True)
OUTPUT = Option("output", str, "prob", "the explained quantity: prob (the target's softmax probability) or logit",
                choices=OUTPUTS)


def batch_option(name: str = "batch_size") -> Option:
    """The rows-per-onnxruntime-call option, under the method's own constructor name (Captum's where it has one)."""
    return Option(name, int, None, "rows per onnxruntime call (default: the model's batch size)", field="batch_size",
                  minimum=1, maximum=1 << 20)


def target_weights(targets: Sequence[int], n_labels: int, output: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gradient-graph weights (w_logit, w_prob), one one-hot row per target; the unused one is None."""
    w = np.zeros((len(targets), n_labels), dtype=np.float32)
    w[np.arange(len(targets)), list(targets)] = 1.0
    return (w, None) if output == "logit" else (None, w)


@dataclass
class Item:
    """One (text, target) pair being explained. x, baseline: (seq, dim) float32."""

    encoded: Encoded
    x: np.ndarray
    baseline: np.ndarray
    target: int
    logits: np.ndarray  # (labels,)
    output_value: float
    baseline_value: float | None = None

    def weights(self, n_labels: int, output: str, n_rows: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        return target_weights([self.target] * n_rows, n_labels, output)


@dataclass(frozen=True)
class Computed:
    scores: np.ndarray  # (seq,)
    convergence_delta: float | None = None
    settings: dict[str, Any] | None = None


class Explainer(ABC):
    """Base class of the attribution methods.

    Parameters
    ----------
    model : a loaded :class:`~xai_onnx.Model`.
    baseline : ``"pad"`` (default), ``"mask"``, ``"unk"``, ``"zero"`` (zero embedding), or a baseline text whose tokens
        fill the non-special positions in order (the rest padded). Special tokens are always kept.
    output : ``"prob"`` (softmax probability of the target, default) or ``"logit"``.
    batch_size : rows per onnxruntime call (the model's by default).
    """

    name: ClassVar[str]
    needs_gradient: ClassVar[bool]
    needs_baseline_value: ClassVar[bool] = False
    texts_per_chunk: ClassVar[int] = 32
    #: every constructor keyword but ``model``, declared once (:mod:`xai_onnx.registry`); ``settings()`` returns them
    options: ClassVar[tuple[Option, ...]] = (BASELINE, OUTPUT, batch_option())

    def __init__(self, model: Model, *, baseline: str = "pad", output: str = "prob", batch_size: int | None = None):
        from ..model import Model as _Model

        if not isinstance(model, _Model):
            raise InputError(f"model must be a xai_onnx.Model, got {type(model).__name__}: load one with Model(bundle)")
        self.model = model
        self.baseline = self._parse("baseline", baseline)
        self.output = self._parse("output", output)
        self.batch_size = batch_option().parse(batch_size, method=self.name)
        if baseline in ("pad", "mask", "unk"):
            model.special_id(baseline)  # fail now if the tokenizer lacks it
        self._baseline_text_ids: np.ndarray | None = None
        if baseline not in BASELINES:
            enc = model.encode([baseline])[0]
            self._baseline_text_ids = enc.ids[~enc.special]
        if self.needs_gradient:
            model._gradient_session()  # fail early, with the re-export hint

    # ---- settings ----------------------------------------------------------------------------------------------
    @classmethod
    def option(cls, name: str) -> Option:
        for opt in cls.options:
            if opt.name == name:
                return opt
        raise KeyError(f"{cls.__name__} has no option {name!r}")

    def _parse(self, name: str, value: Any) -> Any:
        """A constructor argument checked against its declaration (type and bounds), InputError naming it."""
        return self.option(name).parse(value, method=self.name)

    def settings(self) -> dict[str, Any]:
        """The constructor keywords this explainer was built with: ``type(ex)(model, **ex.settings())`` rebuilds it."""
        return {o.name: getattr(self, o.name) for o in self.options}

    def run_settings(self) -> dict[str, Any]:
        """What a result records besides :meth:`settings`: the model's precision where it is not float32."""
        return {"precision": self.model.precision} if self.needs_gradient and self.model.precision != "float32" else {}

    # ---- building blocks ---------------------------------------------------------------------------------------
    def objective(self, logits: np.ndarray, target: int) -> np.ndarray:
        """F for a target: ndarray of shape logits.shape[:-1]."""
        return target_output(logits, target, self.output)

    def baseline_embeds(self, enc: Encoded, x: np.ndarray) -> np.ndarray:
        keep = enc.special
        if self.baseline == "zero":
            b = x.copy()
            b[~keep] = 0.0
            return b
        ids = enc.ids.copy()
        if self._baseline_text_ids is not None:
            fill = np.full(int((~keep).sum()), self.model.special_id("pad"), dtype=np.int64)
            n = min(fill.shape[0], self._baseline_text_ids.shape[0])
            fill[:n] = self._baseline_text_ids[:n]
            ids[~keep] = fill
        else:
            ids[~keep] = self.model.special_id(self.baseline)
        return self.model.embed(ids)

    def _targets(self, target: TargetSpec, predicted: int) -> list[int]:
        if target is None:
            return [predicted]
        if isinstance(target, str) and target == "all":
            return list(range(len(self.model.labels)))
        return [self.model.resolve_target(target)]

    def run(self, groups: Sequence[RowGroup], gradient: bool) -> list[dict[str, np.ndarray]]:
        return self.model.run(groups, gradient=gradient, batch_size=self.batch_size)

    # ---- public API --------------------------------------------------------------------------------------------
    def explain(self, texts: Sequence[str], *, target: TargetSpec = None) -> list[Attribution]:
        """Explain each text.

        target : None for the predicted class, a label name or index, or ``"all"`` for every class. With ``"all"``
            the result holds one Attribution per text and class, text-major.
        """
        return list(self.iter_explain(texts, target=target))

    def iter_explain(self, texts: Sequence[str], *, target: TargetSpec = None) -> Iterator[Attribution]:
        """Like :meth:`explain`, yielding results in input order as each chunk of texts finishes."""
        if target is not None and not (isinstance(target, str) and target == "all"):
            self.model.resolve_target(target)  # fail before any work
        texts = list(texts) if not isinstance(texts, str) else texts
        encoded_all = self.model.encode(texts)
        for start in range(0, len(encoded_all), self.texts_per_chunk):
            yield from self._explain_chunk(encoded_all[start:start + self.texts_per_chunk], target)

    def _explain_chunk(self, encoded: list[Encoded], target: TargetSpec) -> list[Attribution]:
        xs = [self.model.embed(e.ids) for e in encoded]
        bs = [self.baseline_embeds(e, x) for e, x in zip(encoded, xs)]
        groups = [RowGroup(x[None], e.type_ids) for e, x in zip(encoded, xs)]
        if self.needs_baseline_value:
            groups += [RowGroup(b[None], e.type_ids) for e, b in zip(encoded, bs)]
        outs = self.run(groups, gradient=False)
        n = len(encoded)
        items: list[Item] = []
        for i, e in enumerate(encoded):
            logits = outs[i]["logits"][0]
            for t in self._targets(target, int(np.argmax(logits))):
                item = Item(e, xs[i], bs[i], t, logits, float(self.objective(logits, t)))
                if self.needs_baseline_value:
                    item.baseline_value = float(self.objective(outs[n + i]["logits"][0], t))
                items.append(item)
        computed = self.compute(items) if items else []
        return [self._result(item, c) for item, c in zip(items, computed)]

    def _result(self, item: Item, c: Computed) -> Attribution:
        e = item.encoded
        labels = self.model.labels
        probs = softmax(item.logits.astype(np.float64))
        notes = []
        if not (~e.special).any():
            notes.append("text has no tokens to attribute (empty or whitespace only): every score is 0")
        if e.truncated:
            notes.append(f"text truncated to {len(e)} tokens (the model's limit, {self.model.manifest.max_length}); "
                         "the rest was not seen by the model")
        predicted = int(np.argmax(item.logits))
        return Attribution(
            text=e.text, method=self.name, tokens=e.tokens, offsets=e.offsets, scores=c.scores.astype(np.float64),
            target=Target(item.target, labels[item.target]), prediction=Target(predicted, labels[predicted]),
            probabilities={lab: float(p) for lab, p in zip(labels, probs)}, output=self.output,
            output_value=item.output_value, baseline_value=item.baseline_value,
            convergence_delta=c.convergence_delta,
            settings={**self.settings(), **self.run_settings(), **(c.settings or {})},
            truncated=e.truncated, warnings=tuple(notes))

    @abstractmethod
    def compute(self, items: list[Item]) -> list[Computed]:
        """Scores for each item; batch the work across items."""
