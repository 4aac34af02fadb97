"""Faithfulness of explanations: comprehensiveness, sufficiency (ERASER, DeYoung et al. 2020), AOPC under the
most-relevant-first order, and agreement with leave-one-out, each against a random ranking."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .methods.base import Explainer
from .model import Model, RowGroup, target_output
from .progress import Progress
from .tokenization import Encoded

REMOVALS = ("delete", "pad", "mask")
SEGMENTS = ("both", "text", "text_pair")
DEFAULT_FRACTIONS = tuple(k / 10 for k in range(1, 11))


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two score vectors (ties handled); nan with fewer than two items or a constant vector."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[0] < 2:
        return float("nan")
    i, j = np.triu_indices(a.shape[0], k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n_a, n_b = np.count_nonzero(da), np.count_nonzero(db)
    if n_a == 0 or n_b == 0:
        return float("nan")
    return float((da * db).sum() / math.sqrt(n_a * n_b))


def average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks of ``v`` with tied values given the mean of the ranks they span (``[1, 2, 2, 3]`` ->
    ``[1, 2.5, 2.5, 4]``), as standard Spearman uses: shape (n,), float64."""
    v = np.asarray(v, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])  # first position of each run of equal values
    ends = np.r_[starts[1:], len(v)]
    ranks = np.empty(len(v))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # mean of the 1-based ranks start+1 .. end
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score vectors: Pearson's correlation of their average ranks (ties share
    the mean rank, so the result does not depend on the input order); nan for a constant vector."""
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(frozen=True)
class MethodScores:
    """Corpus means for one ranking (a method, or ``random``).

    comprehensiveness, sufficiency : per fraction of the non-special tokens, shape (n_fractions,).
    comprehensiveness_area, sufficiency_area : their means over the fractions (higher / lower is better).
    aopc : mean over k = 0..L of F(x) - F(x without its k most relevant tokens), most-relevant-first (higher is better).
    tau_loo : Kendall's tau-b between the scores and leave-one-out (each token removed the evaluation's way: deleted,
        or replaced by [PAD] / [MASK]); None for random.
    """

    method: str
    comprehensiveness: tuple[float, ...]
    sufficiency: tuple[float, ...]
    comprehensiveness_area: float
    sufficiency_area: float
    aopc: float
    tau_loo: float | None
    seconds_per_text: float | None
    n_texts: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class FaithfulnessReport:
    fractions: tuple[float, ...]
    removal: str
    output: str
    methods: tuple[MethodScores, ...]
    random: MethodScores
    settings: dict[str, Any] = field(default_factory=dict)

    def best(self) -> str:
        return max(self.methods, key=lambda m: m.comprehensiveness_area).method

    def to_dict(self) -> dict[str, Any]:
        return {"fractions": list(self.fractions), "removal": self.removal, "output": self.output,
                "methods": [m.to_dict() for m in self.methods], "random": self.random.to_dict(),
                "best_by_comprehensiveness": self.best(), "settings": dict(self.settings)}

    def table(self) -> str:
        head = f"{'method':<14}{'compr. area':>12}{'suff. area':>12}{'AOPC':>9}{'tau(LOO)':>10}{'s/text':>9}"
        rows = [head, "-" * len(head)]
        for m in (*self.methods, self.random):
            tau = "" if m.tau_loo is None else f"{m.tau_loo:.3f}"
            sec = "" if m.seconds_per_text is None else f"{m.seconds_per_text:.4f}"
            rows.append(f"{m.method:<14}{m.comprehensiveness_area:>12.4f}{m.sufficiency_area:>12.4f}{m.aopc:>9.4f}"
                        f"{tau:>10}{sec:>9}")
        return "\n".join(rows)


class FaithfulnessEvaluator:
    """Measure how faithful each explainer's token ranking is to the model.

    Parameters
    ----------
    model : the loaded bundle.
    fractions : fractions of the non-special tokens removed (comprehensiveness) or kept (sufficiency).
    removal : ``"delete"`` (default: drop the tokens, the sequence gets shorter), ``"pad"`` or ``"mask"`` (replace
        them by that token). Special tokens are never removed.
    output : F is the target's ``"prob"`` (default) or ``"logit"``; the target is the predicted class.
    random_state : seed of the random reference ranking (one seed a text, drawn up front).
    granularity : ``"token"`` (default) ranks and removes tokens; ``"word"`` ranks words (token scores merged as
        each explainer's ``word_merge`` says, or its word scores) and removes all of a word's tokens at once; the
        fractions are then of the words.
    segment : for sentence pairs, which text's tokens are ranked and removed: ``"both"`` (default: every
        non-special token of the two texts), ``"text"`` (the first: premise, query) or ``"text_pair"`` (the second:
        hypothesis, passage). The other text stays whole, and separators and special tokens are never removed.
        Single texts take ``"both"`` or ``"text"`` (the same thing).
    """

    def __init__(self, model: Model, *, fractions: Sequence[float] = DEFAULT_FRACTIONS, removal: str = "delete",
                 output: str = "prob", random_state: int | None = 0, batch_size: int | None = None,
                 granularity: str = "token", segment: str = "both"):
        model.require_sequence_classifier("evaluate (single texts or pairs)")
        if removal not in REMOVALS:
            raise InputError(f"removal must be one of {REMOVALS}, got {removal!r}")
        if output not in ("prob", "logit"):
            raise InputError(f"output must be 'prob' or 'logit', got {output!r}")
        fr = tuple(float(f) for f in fractions)
        if not fr or any(not 0 < f <= 1 for f in fr):
            raise InputError(f"fractions must lie in (0, 1], got {fractions}")
        self.model, self.fractions, self.removal, self.output = model, fr, removal, output
        self.random_state, self.batch_size = random_state, batch_size
        if granularity not in ("token", "word"):
            raise InputError(f"granularity must be 'token' or 'word', got {granularity!r}")
        self.granularity = granularity
        if segment not in SEGMENTS:
            raise InputError(f"segment must be one of {SEGMENTS}, got {segment!r}")
        self.segment = segment

    def _rankable(self, enc: Encoded) -> np.ndarray:
        """Bool mask of the positions this evaluation ranks and removes: non-special, in the chosen segment."""
        seg = enc.segment_ids()
        if self.segment == "both":
            return seg >= 0
        return seg == (0 if self.segment == "text" else 1)

    def _words(self, enc: Encoded) -> tuple[list[list[int]], np.ndarray]:
        """Every word of the text (token positions of each, :func:`~xai_onnx.perturbation.word_groups`) and the
        indices of the chosen segment's words among them."""
        from .perturbation import word_groups

        groups = word_groups(enc)
        rankable = self._rankable(enc)
        return groups, np.array([j for j, g in enumerate(groups) if rankable[g[0]]], dtype=np.int64)

    # ---- F on token subsets ----------------------------------------------------------------------------------------
    def _variants(self, enc: Encoded, removed: list[np.ndarray]) -> list[RowGroup]:
        """Inputs with each given set of positions removed."""
        if self.removal == "delete":
            groups = []
            for rm in removed:
                keep = np.ones(len(enc), dtype=bool)
                keep[rm] = False
                groups.append(RowGroup(self.model.embed(enc.ids[keep])[None], enc.type_ids[keep]))
            return groups
        ids = np.repeat(enc.ids[None], len(removed), axis=0)
        fill = self.model.special_id(self.removal)
        for r, rm in enumerate(removed):
            ids[r, rm] = fill
        return [RowGroup(self.model.embed(ids), enc.type_ids)]

    def _evaluate_rankings(self, enc: Encoded, target: int, fx: float, rankings: list[np.ndarray],
                           units: list[np.ndarray] | None = None) -> list[dict[str, Any]]:
        """For each ranking of the non-special positions (most relevant first): the curves and AOPC. With
        ``units`` (the token positions of each word), rankings order the units and a unit is removed whole."""
        n = len(rankings[0])
        ks = [max(1, math.ceil(f * n - 1e-9)) for f in self.fractions] if n else []
        all_pos = np.flatnonzero(self._rankable(enc))

        def tokens(order: np.ndarray) -> np.ndarray:
            if units is None:
                return order
            return np.concatenate([units[u] for u in order]) if len(order) else np.zeros(0, dtype=np.int64)

        removed: list[np.ndarray] = []
        for rank in rankings:
            removed += [tokens(rank[:k]) for k in ks]  # comprehensiveness
            removed += [np.setdiff1d(all_pos, tokens(rank[:k])) for k in ks]  # sufficiency: keep the top k
            removed += [tokens(rank[:k]) for k in range(1, n + 1)]  # AOPC, one token (word) at a time
        groups = self._variants(enc, removed) if removed else []
        outs = self.model.run(groups, batch_size=self.batch_size) if groups else []
        logits = np.concatenate([o["logits"] for o in outs]) if outs else np.zeros((0, len(self.model.labels)))
        f = target_output(logits, target, self.output)
        results, at = [], 0
        for _ in rankings:
            comp = fx - f[at:at + len(ks)]
            at += len(ks)
            suff = fx - f[at:at + len(ks)]
            at += len(ks)
            drops = fx - f[at:at + n]
            at += n
            results.append({"comp": comp, "suff": suff, "aopc": float(drops.sum() / (n + 1)) if n else 0.0})
        return results

    def _leave_one_out(self, enc: Encoded, target: int, fx: float) -> np.ndarray:
        """F(x) - F(x with token i removed the evaluation's way), for each ranked position i: shape (seq,), 0
        elsewhere."""
        pos = np.flatnonzero(self._rankable(enc))
        scores = np.zeros(len(enc))
        if len(pos):
            scores[pos] = self._loo(enc, target, fx, [np.array([p]) for p in pos])
        return scores

    def _loo(self, enc: Encoded, target: int, fx: float, units: Sequence[np.ndarray]) -> np.ndarray:
        """F(x) - F(x with one unit's tokens removed the evaluation's way), per unit: shape (len(units),)."""
        outs = self.model.run(self._variants(enc, list(units)), batch_size=self.batch_size)
        return fx - target_output(np.concatenate([o["logits"] for o in outs]).astype(np.float64), target, self.output)

    # ---- public API ------------------------------------------------------------------------------------------------
    def leave_one_out(self, texts: Any, text_pairs: Sequence[str] | None = None) -> list[np.ndarray]:
        """Leave-one-out scores as tau(LOO) uses them: per text (or pair), F(x) - F(x with token i removed this
        evaluator's way) for the predicted class, shape (n_tokens,), 0 at special tokens and outside the segment."""
        inputs = self.model.inputs(texts, text_pairs)
        encoded = self.model.encode(inputs.texts, inputs.pairs)
        logits, _ = self.model.forward_encoded(encoded)
        out = []
        for e, lg in zip(encoded, logits):
            t = int(np.argmax(lg))
            fx = float(target_output(lg, t, self.output))
            out.append(self._leave_one_out(e, t, fx))
        return out

    def evaluate(self, texts: Any, explainers: Mapping[str, Explainer], *, text_pairs: Sequence[str] | None = None,
                 progress: Callable[[int], None] | None = None) -> FaithfulnessReport:
        """Evaluate each explainer on ``texts`` (strings, or (text, text_pair) couples, or texts with
        ``text_pairs``); texts with no token to remove (in the chosen segment) are skipped."""
        if not explainers:
            raise InputError("give at least one explainer to evaluate")
        for name, ex in explainers.items():
            if ex.output != self.output:
                raise InputError(f"explainer {name!r} explains output={ex.output!r}, the evaluation uses {self.output!r}")
        inputs = self.model.inputs(texts, text_pairs)
        if inputs.pairs is None and self.segment == "text_pair":
            raise InputError("segment='text_pair' needs sentence pairs: give (text, text_pair) couples")
        encoded = [e for e in self.model.encode(inputs.texts, inputs.pairs) if self._rankable(e).any()]
        if not encoded:
            what = " in the chosen segment" if self.segment != "both" else ""
            raise InputError(f"no text with a token to remove{what}: give non-empty texts")
        kept = [e.text for e in encoded]
        kept_pairs = [e.text_pair or "" for e in encoded] if inputs.pairs is not None else None
        # leave-one-out follows the removal: each token deleted, or replaced by [PAD] / [MASK] (then it is occlusion
        # with window 1 and that baseline)
        logits, _ = self.model.forward_encoded(encoded)
        targets = [int(np.argmax(lg)) for lg in logits]
        fxs = [float(target_output(lg, t, self.output)) for lg, t in zip(logits, targets)]
        loo_scores = ([self._leave_one_out(e, t, fx) for e, t, fx in zip(encoded, targets, fxs)]
                      if self.granularity == "token" else [np.zeros(len(e)) for e in encoded])
        seeds = np.random.default_rng(self.random_state).integers(0, 2**63 - 1, size=len(kept))
        per_method: dict[str, list[dict[str, Any]]] = {name: [] for name in explainers}
        rand: list[dict[str, Any]] = []
        timing: dict[str, float] = {}
        attributions = {}
        for name, ex in explainers.items():
            t0 = time.perf_counter()
            attributions[name] = ex.attributions(kept, text_pairs=kept_pairs)
            timing[name] = (time.perf_counter() - t0) / len(kept)
        for i, enc in enumerate(encoded):
            rankable = self._rankable(enc)
            pos = np.flatnonzero(rankable)
            target, fx = targets[i], fxs[i]
            rankings = []
            units = None
            if self.granularity == "word":
                groups, index = self._words(enc)
                units = [np.asarray(groups[j], dtype=np.int64) for j in index]
                pos = np.arange(len(units))  # rankings order the words
            unit_scores = {name: self._unit_scores(attributions[name][i], ex, enc) for name, ex in explainers.items()}
            # leave-one-out over the ranked units: each token, or each whole word, removed the evaluation's way
            loo_units = loo_scores[i][rankable] if units is None else self._loo(enc, target, fx, units)
            for name in explainers:
                rankings.append(pos[np.argsort(-unit_scores[name], kind="stable")])
            rankings.append(np.random.default_rng(int(seeds[i])).permutation(pos))
            res = self._evaluate_rankings(enc, target, fx, rankings, units)
            for name, r in zip(explainers, res):
                r["tau"] = kendall_tau(unit_scores[name], loo_units)
                per_method[name].append(r)
            rand.append(res[-1])
            if progress:
                progress(1)

        def summarise(name: str, rows: list[dict[str, Any]], seconds: float | None, with_tau: bool) -> MethodScores:
            comp = np.mean([r["comp"] for r in rows], axis=0)
            suff = np.mean([r["suff"] for r in rows], axis=0)
            taus = [r["tau"] for r in rows if with_tau and not math.isnan(r["tau"])]
            return MethodScores(name, tuple(float(v) for v in comp), tuple(float(v) for v in suff), float(comp.mean()),
                                float(suff.mean()), float(np.mean([r["aopc"] for r in rows])),
                                float(np.mean(taus)) if taus else (None if not with_tau else float("nan")), seconds,
                                len(rows))

        return FaithfulnessReport(
            fractions=self.fractions, removal=self.removal, output=self.output,
            methods=tuple(summarise(n, per_method[n], timing[n], True) for n in explainers),
            random=summarise("random", rand, None, False),
            settings={"random_state": self.random_state, "n_texts": len(kept), "skipped": len(texts) - len(kept),
                      "granularity": self.granularity, "segment": self.segment,
                      "pairs": inputs.pairs is not None,
                      "explainers": {n: ex.settings() for n, ex in explainers.items()},
                      "definitions": definitions(self.removal, self.segment)},
        )

    def _unit_scores(self, attr: Any, explainer: Explainer, enc: Encoded) -> np.ndarray:
        """One score per ranked unit: the non-special tokens' scores, or the words' scores."""
        if self.granularity == "token":
            if attr.granularity == "word":
                raise InputError(f"{attr.method} gives word scores: evaluate with granularity='word', or build it with "
                                 "granularity='token'")
            return np.asarray(attr.scores)[self._rankable(enc)]
        groups, index = self._words(enc)
        if attr.granularity == "word":
            return np.asarray(attr.scores)[index]
        from .granularity import to_words

        return np.asarray(to_words(attr, merge=explainer.word_merge, groups=groups).scores)[index]


def definitions(removal: str, segment: str = "both") -> dict[str, str]:
    """What each measure is, in words, for the JSON report (ferret's names where they differ)."""
    how = {"delete": "deleted (the sequence gets shorter)", "pad": "replaced by the pad token",
           "mask": "replaced by the mask token"}[removal]
    where = {"both": "the tokens of both texts of a pair are ranked and removed (never a separator)",
             "text": "only the first text's tokens are ranked and removed; the second text stays whole",
             "text_pair": "only the second text's tokens are ranked and removed; the first text stays whole"}[segment]
    return {
        "segment": f"sentence pairs: {where}; n counts those tokens",
        "removal": f"removed tokens are {how}; special tokens are never removed",
        "ranking": "every non-special token is ranked by its score, highest first (negative scores included)",
        "k": "k = ceil(f * n) for each fraction f, n = the text's non-special tokens, at least 1; ks may repeat on "
             "short texts (each counts)",
        "comprehensiveness": "F(x) - F(x without its top-k tokens), per fraction; the area is its mean over the "
                             "fractions (ferret's aopc_compr is this area, with its own k and rationales)",
        "sufficiency": "F(x) - F(x with only its top-k tokens), per fraction; the area is its mean over the fractions "
                       "(ferret's aopc_suff is this area, with its own k and rationales)",
        "aopc": "one token at a time: mean over k = 0..n of F(x) - F(x without its k most relevant tokens) (the k = 0 "
                "term is 0); not ferret's aopc_compr",
        "tau_loo": "Kendall's tau-b between the scores and leave-one-out, F(x) - F(x without token i), with tokens "
                   f"{how}",
        "ferret": "ferret by default ranks only the tokens with positive scores, takes k = int(f * n) and drops "
                  "repeated ks, so its numbers differ from these on the same texts",
    }


def evaluate_with_progress(evaluator: FaithfulnessEvaluator, texts: Any, explainers: Mapping[str, Explainer],
                           *, text_pairs: Sequence[str] | None = None, quiet: bool = False) -> FaithfulnessReport:
    bar = Progress(len(texts), "evaluate", enabled=None if not quiet else False)
    try:
        return evaluator.evaluate(texts, explainers, text_pairs=text_pairs, progress=bar.update)
    finally:
        bar.close()
