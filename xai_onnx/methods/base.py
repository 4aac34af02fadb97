"""What every attribution method shares: targets, baselines, F(x), chunking and result assembly."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from ..model import Model, RowGroup
from ..registry import Option
from ..results import Attribution, PositionAttribution, Target, TokenAttribution
from ..tasks import Inputs, Objective, Unit, probabilities, target_output, target_weights
from ..tokenization import Encoded

__all__ = ["BASELINE", "GRANULARITY", "OUTPUT", "Computed", "Explainer", "Item", "Result", "batch_option", "target_weights"]

BASELINES = ("pad", "mask", "unk", "zero")
OUTPUTS = ("prob", "logit")
TargetSpec = int | str | None

BASELINE = Option("baseline", str, "pad", "what a removed token becomes: pad, mask, unk, zero (a zero embedding) or a "
                  "baseline text whose tokens fill the positions in order", choices=BASELINES, open_choices=True)
OUTPUT = Option("output", str, None, "the explained quantity: prob (the target's softmax probability; the sigmoid for a "
                "one-output model) or logit; default: logit for one-output models and similarity, else prob",
                choices=OUTPUTS)
GRANULARITY = Option("granularity", str, "token", "scores per token, or per word (word pieces merged: additive methods "
                     "sum their tokens, saliency takes the L2 norm)", choices=("token", "word"))


def batch_option(name: str = "batch_size") -> Option:
    """The rows-per-onnxruntime-call option, under the method's own constructor name (Captum's where it has one)."""
    return Option(name, int, None, "rows per onnxruntime call (default: the model's batch size)", field="batch_size",
                  minimum=1, maximum=1 << 20)


@dataclass
class Item:
    """One (input, target) being explained. x, baseline: (seq, dim) float32.

    ``objective`` says what F is (:mod:`xai_onnx.tasks`): ``objective.value(outputs)`` reads F from a run's outputs,
    ``feeds(n_rows)`` gives the gradient graph's inputs that differentiate it. ``target`` is the target's label index
    (kept for methods written before tasks: ``Explainer.objective(logits, target)`` is F for sequence classifiers).
    """

    encoded: Encoded
    x: np.ndarray
    baseline: np.ndarray
    target: int
    logits: np.ndarray | None  # the forward logits of the input (labels,) or (seq, labels); None for similarity
    output_value: float
    baseline_value: float | None = None
    objective: Objective | None = None
    unit: Unit | None = None

    def value(self, out: dict[str, np.ndarray]) -> np.ndarray:
        """F per row of a run's outputs: shape (rows,), float64."""
        assert self.objective is not None
        return self.objective.value(out)

    def feeds(self, n_rows: int) -> dict[str, np.ndarray]:
        assert self.objective is not None
        return self.objective.feeds(n_rows, self.x.shape[0])

    @property
    def input_key(self) -> tuple[int, int, int]:
        """Equal for the items of one input that differ only in their target (they share ``x`` and ``baseline``)."""
        return id(self.encoded), id(self.x), id(self.baseline)

    def group(self, rows: np.ndarray) -> RowGroup:
        """Rows of this item's input (n, seq, dim) with the objective's gradient-graph inputs."""
        return RowGroup(rows, self.encoded.type_ids, feeds=self.feeds(rows.shape[0]))


@dataclass(frozen=True)
class Computed:
    scores: np.ndarray  # (seq,)
    convergence_delta: float | None = None
    settings: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()


Result = Attribution | TokenAttribution


class Explainer(ABC):
    """Base class of the attribution methods.

    Parameters
    ----------
    model : a loaded :class:`~xai_onnx.Model`.
    baseline : ``"pad"`` (default), ``"mask"``, ``"unk"``, ``"zero"`` (zero embedding), or a baseline text whose tokens
        fill the non-special positions in order (the rest padded). Special tokens are always kept.
    output : ``"prob"`` (softmax probability of the target; the sigmoid for a one-output model) or ``"logit"``;
        None: the task's default (the logit for one-output models and similarity bundles, else the probability).
    batch_size : rows per onnxruntime call (the model's by default).
    granularity : ``"token"`` (default) or ``"word"``: results per word (``Attribution.granularity``), the word's
        token scores merged by :attr:`word_merge` (:func:`xai_onnx.granularity.to_words`). Sequence classification
        and similarity; token classification stays per token.
    """

    name: ClassVar[str]
    needs_gradient: ClassVar[bool]
    needs_baseline_value: ClassVar[bool] = False
    texts_per_chunk: ClassVar[int] = 32
    #: every constructor keyword but ``model``, declared once (:mod:`xai_onnx.registry`); ``settings()`` returns them
    options: ClassVar[tuple[Option, ...]] = (BASELINE, OUTPUT, batch_option(), GRANULARITY)
    #: how a word's token scores merge at word granularity: "sum" (additive scores) or "norm" (gradient norms)
    word_merge: ClassVar[str] = "sum"
    #: True where the targets of one text (classes, positions) read F off the same rows (:meth:`run_forward_shared`):
    #: the work of a text is then :meth:`evaluations` once, not once per target
    shares_rows: ClassVar[bool] = False

    def __init__(self, model: Model, *, baseline: str = "pad", output: str | None = None, batch_size: int | None = None,
                 granularity: str = "token"):
        from ..model import Model as _Model

        if not isinstance(model, _Model):
            raise InputError(f"model must be a xai_onnx.Model, got {type(model).__name__}: load one with Model(bundle)")
        self.model = model
        self.baseline = self._parse("baseline", baseline)
        self.output = model.task.check_output(self._parse("output", output))
        self.batch_size = batch_option().parse(batch_size, method=self.name)
        self.granularity = self._parse("granularity", granularity)
        if self.granularity == "word" and model.manifest.task == "token-classification":
            raise InputError("granularity 'word' is not available for token classification (its results are per "
                             "token position): use granularity='token'")
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
        m = self.model
        int8 = m.precision != "float32" and (self.needs_gradient or m.forward_spec is not m.manifest.forward)
        return {"precision": m.precision} if int8 else {}

    def evaluations(self, n_tokens: int) -> int:
        """Gradient or forward rows that explaining one text of ``n_tokens`` tokens for one target costs (the work
        budget's unit, :class:`~xai_onnx.limits.Limits`); the forward pass that finds the prediction not counted."""
        return 1

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
        return self.model.task._classes(target, predicted)

    def run(self, groups: Sequence[RowGroup], gradient: bool) -> list[dict[str, np.ndarray]]:
        return self.model.run(groups, gradient=gradient, batch_size=self.batch_size)

    def run_forward_shared(self, items: Sequence[Item],
                           rows_of: Callable[[Item], np.ndarray]) -> list[dict[str, np.ndarray] | None]:
        """Forward outputs of ``rows_of(item)`` for each item, running the rows once per distinct input: the items of
        one text that differ only in their target (``--target all``, the positions of a token classifier) share
        their perturbed rows. None where an item has no rows."""
        keys = [it.input_key for it in items]
        first: dict[tuple[int, int, int], Item] = {}
        for k, it in zip(keys, items):
            first.setdefault(k, it)
        built = {k: rows_of(it) for k, it in first.items()}
        todo = [k for k, rows in built.items() if rows.shape[0]]
        outs = dict(zip(todo, self.run([first[k].group(built[k]) for k in todo], gradient=False)))
        return [outs.get(k) for k in keys]

    # ---- public API --------------------------------------------------------------------------------------------
    def explain(self, texts: Any, *, target: TargetSpec = None, text_pairs: Sequence[str] | None = None,
                **task_options: Any) -> list[Result]:
        """Explain each text, or (text, text_pair) couple.

        texts : a list of strings, or of (text, text_pair) couples (sentence pairs: NLI, cross-encoders; a
            similarity bundle compares the two texts). text_pairs : the second texts, one per text, instead.
        target : None for the predicted class, a label name or index, or ``"all"`` for every class. With ``"all"``
            the result holds one Attribution per text and class, text-major. A similarity bundle takes none.
        task_options : token classification: ``positions`` (``"entities"``, default, every position whose predicted
            label is not the outside label; ``"all"``; or a list of token positions) and ``outside`` (the outside
            label, ``"O"`` where the labels have it).

        Returns one :class:`~xai_onnx.Attribution` per text and target (sequence classification, similarity) or one
        :class:`~xai_onnx.results.TokenAttribution` per text (token classification).
        """
        return list(self.iter_explain(texts, target=target, text_pairs=text_pairs, **task_options))

    def attributions(self, texts: Any, *, target: TargetSpec = None,
                     text_pairs: Sequence[str] | None = None) -> list[Attribution]:
        """:meth:`explain` for a sequence classifier, typed: one :class:`Attribution` per text and target. The
        corpus tools (evaluation, the debugging report) use it; other tasks are refused with a clear message."""
        self.model.require_sequence_classifier(f"{self.name}.attributions")
        out = self.explain(texts, target=target, text_pairs=text_pairs)
        return [r for r in out if isinstance(r, Attribution)]

    def iter_explain(self, texts: Any, *, target: TargetSpec = None, text_pairs: Sequence[str] | None = None,
                     **task_options: Any) -> Iterator[Result]:
        """Like :meth:`explain`, yielding results in input order as each chunk of texts finishes."""
        task = self.model.task
        task.check_target(target)  # fail before any work
        unknown = set(task_options) - {"positions", "outside"}
        if unknown:
            raise InputError(f"unknown option(s) {sorted(unknown)} for explain()")
        if self.model.manifest.task != "token-classification" and any(v is not None for v in task_options.values()):
            raise InputError("positions and outside apply to token-classification bundles only")
        inputs = texts if isinstance(texts, Inputs) else self.model.inputs(texts, text_pairs)
        if self.model.manifest.task == "token-classification":
            from ..tasks import parse_positions

            parse_positions(task_options.get("positions"))
        per = self.texts_per_chunk
        for start in range(0, len(inputs.texts), per):
            chunk = Inputs(inputs.texts[start:start + per], None if inputs.pairs is None else inputs.pairs[start:start + per])
            encoded = task.encode(chunk)
            # long texts are cut into smaller chunks (sequence classification: one encoding per text)
            parts = self._chunks(encoded) if self.model.manifest.task == "sequence-classification" else [encoded]
            for part in parts:
                yield from self._explain_chunk(part, target, task_options)

    #: token rows (evaluations x tokens) one chunk of texts may build at once: bounds the memory of the rows, paths
    #: and gradients a chunk holds, whatever the texts' length (32 short texts fit; IG at 50 steps on 512 tokens: 2)
    chunk_token_rows: ClassVar[int] = 65536

    def _chunks(self, encoded: list[Encoded]) -> Iterator[list[Encoded]]:
        chunk: list[Encoded] = []
        load = 0
        for e in encoded:
            cost = self.evaluations(len(e)) * len(e)
            if chunk and (len(chunk) >= self.texts_per_chunk or load + cost > self.chunk_token_rows):
                yield chunk
                chunk, load = [], 0
            chunk.append(e)
            load += cost
        if chunk:
            yield chunk

    def _explain_chunk(self, encoded: list[Encoded], target: TargetSpec,
                       task_options: dict[str, Any] | None = None) -> list[Result]:
        xs = [self.model.embed(e.ids) for e in encoded]
        bs = [self.baseline_embeds(e, x) for e, x in zip(encoded, xs)]
        groups = [RowGroup(x[None], e.type_ids) for e, x in zip(encoded, xs)]
        if self.needs_baseline_value:
            groups += [RowGroup(b[None], e.type_ids) for e, b in zip(encoded, bs)]
        outs = self.run(groups, gradient=False)
        n = len(encoded)
        units = self.model.task.units(encoded, outs[:n], target, self.output, **(task_options or {}))
        index = {id(e): i for i, e in enumerate(encoded)}
        items: list[Item] = []
        for u in units:
            i = index[id(u.encoded)]
            logits = outs[i]["logits"][0] if "logits" in outs[i] else None
            item = Item(u.encoded, xs[i], bs[i], u.objective.target.index, logits, float(u.objective.value(outs[i])[0]),
                        objective=u.objective, unit=u)
            if self.needs_baseline_value:
                item.baseline_value = float(u.objective.value(outs[n + i])[0])
            items.append(item)
        computed: list[Computed] = []
        for part in self._item_slices(items):
            computed += self.compute(part)
        return self.shape(encoded, items, computed)

    def _item_slices(self, items: list[Item]) -> Iterator[list[Item]]:
        """Consecutive items whose rows (evaluations x tokens) stay within :attr:`chunk_token_rows` together: the
        many positions of a long text (token classification) or every class of it are computed a few at a time, so
        the rows, paths and gradients held at once stay bounded (IG on 500 positions of a 512-token text would hold
        20 GB of paths at once). Items that share rows count once."""
        part: list[Item] = []
        load = 0
        seen: set[tuple[int, int, int]] = set()
        for it in items:
            key = it.input_key
            cost = 0 if self.shares_rows and key in seen else self.evaluations(len(it.encoded)) * len(it.encoded)
            if part and load + cost > self.chunk_token_rows:
                yield part
                part, load, seen = [], 0, set()
                cost = self.evaluations(len(it.encoded)) * len(it.encoded)
            part.append(it)
            seen.add(key)
            load += cost
        if part:
            yield part

    # ---- results -------------------------------------------------------------------------------------------------
    def _notes(self, e: Encoded, scores: np.ndarray | None = None) -> list[str]:
        notes = []
        if not (~e.special).any():
            # every method keeps special tokens in its baseline, so IG, occlusion and fd give them 0; saliency and
            # grad x input report their gradient: say which of the two this result is
            if scores is not None and not np.any(scores):
                notes.append("text has no tokens to attribute (empty or whitespace only): every score is 0")
            else:
                specials = ", ".join(dict.fromkeys(t for t, sp in zip(e.tokens, e.special) if sp))
                notes.append("text has no tokens to attribute (empty or whitespace only): the only scores are the "
                             f"special tokens' ({specials}), which say nothing about the text")
        if e.truncated:
            notes.append(f"text truncated to {len(e)} tokens (the model's limit, {self.model.manifest.max_length}); "
                         "the rest was not seen by the model")
        return notes

    def shape(self, encoded: list[Encoded], items: list[Item], computed: list[Computed]) -> list[Result]:
        """Results in input order: one per item (sequence classification), per pair (similarity: both sides in one
        result) or per text (token classification: its positions in one result)."""
        task = self.model.manifest.task
        if task == "sequence-classification":
            return [self._result(item, c) for item, c in zip(items, computed)]
        by_group: dict[int, list[tuple[Item, Computed]]] = {}
        for item, c in zip(items, computed):
            assert item.unit is not None
            by_group.setdefault(item.unit.group, []).append((item, c))
        if task == "similarity":
            return [self._similarity_result(by_group[g]) for g in range(len(encoded) // 2)]
        return [self._token_result(e, by_group.get(g, [])) for g, e in enumerate(encoded)]

    def _result(self, item: Item, c: Computed) -> Attribution:
        e = item.encoded
        labels = self.model.labels
        assert item.logits is not None
        probs = probabilities(item.logits)
        predicted = int(np.argmax(item.logits)) if len(labels) > 1 else 0
        attr = Attribution(
            text=e.text, method=self.name, tokens=e.tokens, offsets=e.offsets, scores=c.scores.astype(np.float64),
            target=Target(item.target, labels[item.target]), prediction=Target(predicted, labels[predicted]),
            probabilities={lab: float(p) for lab, p in zip(labels, probs)}, output=self.output,
            output_value=item.output_value, baseline_value=item.baseline_value,
            convergence_delta=c.convergence_delta,
            settings={**self.settings(), **self.run_settings(), **(c.settings or {})},
            truncated=e.truncated, warnings=tuple(self._notes(e, c.scores)) + c.warnings,
            text_pair=e.text_pair, segments=None if e.text_pair is None else tuple(e.segment_list()))
        return self._granular(attr, [e])

    def _similarity_result(self, pair: list[tuple[Item, Computed]]) -> Attribution:
        (a, ca), (b, cb) = pair
        ea, eb = a.encoded, b.encoded
        segments = [None if s is None else 0 for s in ea.segment_list()] + [None if s is None else 1 for s in eb.segment_list()]
        sides = tuple({"segment": k, "baseline_value": it.baseline_value, "convergence_delta": c.convergence_delta}
                      for k, (it, c) in enumerate(pair))
        target = Target(0, "similarity")
        extra: dict[str, Any] = {}
        for c in (ca, cb):
            for key, value in (c.settings or {}).items():
                extra.setdefault(key, []).append(value)
        attr = Attribution(
            text=ea.text, method=self.name, tokens=ea.tokens + eb.tokens, offsets=ea.offsets + eb.offsets,
            scores=np.concatenate([ca.scores, cb.scores]).astype(np.float64), target=target, prediction=target,
            probabilities={}, output=self.output, output_value=a.output_value, baseline_value=None,
            convergence_delta=None, settings={**self.settings(), **self.run_settings(), **extra},
            truncated=ea.truncated or eb.truncated,
            warnings=tuple(self._notes(ea, ca.scores) + self._notes(eb, cb.scores)) + ca.warnings + cb.warnings,
            text_pair=eb.text, segments=tuple(segments), sides=sides)
        return self._granular(attr, [ea, eb])

    def _granular(self, attr: Attribution, parts: list[Encoded]) -> Attribution:
        """``attr`` at the explainer's granularity; ``parts``: the encodings whose tokens it lists, in order."""
        if self.granularity != "word":
            return attr
        from ..granularity import to_words
        from ..perturbation import word_groups

        groups, at = [], 0
        for e in parts:
            groups += [[at + p for p in g] for g in word_groups(e)]
            at += len(e)
        return to_words(attr, merge=self.word_merge, groups=groups)

    def _token_result(self, e: Encoded, pieces: list[tuple[Item, Computed]]) -> TokenAttribution:
        labels = self.model.labels
        logits = pieces[0][0].logits if pieces else None
        if logits is None:
            logits = self.run([RowGroup(self.model.embed(e.ids)[None], e.type_ids)], gradient=False)[0]["logits"][0]
        predicted = tuple(labels[int(k)] for k in np.asarray(logits).argmax(-1))
        positions = []
        position_notes: list[str] = []
        extra: dict[str, Any] = {}
        for item, c in pieces:
            assert item.unit is not None and item.unit.position is not None
            p = item.unit.position
            positions.append(PositionAttribution(
                position=p, token=e.tokens[p], label=predicted[p], target=Target(item.target, labels[item.target]),
                scores=c.scores.astype(np.float64), output_value=item.output_value, baseline_value=item.baseline_value,
                convergence_delta=c.convergence_delta))
            for key, value in (c.settings or {}).items():
                extra.setdefault(key, []).append(value)
            notes_c = [f"position {p}: {w}" for w in c.warnings]
            position_notes.extend(notes_c)
        notes = self._notes(e) + position_notes
        if not positions:
            notes.append("no position to explain (no entity predicted, or none asked for)")
        return TokenAttribution(
            text=e.text, method=self.name, tokens=e.tokens, offsets=e.offsets, predicted=predicted,
            positions=tuple(positions), output=self.output,
            settings={**self.settings(), **self.run_settings(), **extra}, truncated=e.truncated,
            warnings=tuple(notes), text_pair=e.text_pair,
            segments=None if e.text_pair is None else tuple(e.segment_list()))

    @abstractmethod
    def compute(self, items: list[Item]) -> list[Computed]:
        """Scores for each item; batch the work across items."""
