"""int8 copies of the gradient and forward graphs (dynamic quantisation of the weight matrices), opt-in with ``--int8``.

Faster on CPUs with VNNI, less faithful: the fidelity is measured at export against the float32 graph (rank
correlation of per-token gradient norms) and written to the manifest; scripts/benchmark.py measures it on real text.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np


def quantize_gradient(bundle_dir: Path, float_file: str, int8_file: str) -> None:
    """Write ``int8_file``: ``float_file`` with its constant-folded weight matrices quantised to int8 (per channel)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folded = bundle_dir / f".{int8_file}.folded.onnx"
    so = ort.SessionOptions()
    # BASIC only: constant folding turns the backward's Transpose(weight) into initializers quantize_dynamic can
    # quantise, without the CPU-specific fused kernels of the higher levels
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(folded)
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(bundle_dir / float_file), so, providers=["CPUExecutionProvider"])
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic logs advice on the root logger
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_dynamic(folded, bundle_dir / int8_file, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
    finally:
        folded.unlink(missing_ok=True)


def int8_fidelity(bundle_dir: Path, float_file: str, int8_file: str, embeddings: np.ndarray, n_labels: int,
                  uses_tt: bool, max_length: int) -> dict[str, Any]:
    """Per-token gradient norms of the int8 graph against the float32 graph on random token sequences: Spearman
    rank correlation per row (mean and min) and the worst relative error of the gradients."""
    import onnxruntime as ort

    from xai_onnx.evaluation import spearman

    from .validate import _rel, random_feeds

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sessions = [ort.InferenceSession(str(bundle_dir / f), so, providers=["CPUExecutionProvider"]) for f in (float_file, int8_file)]
    rng = np.random.default_rng(4321)
    corr, rel = [], 0.0
    for b, s in ((4, min(24, max_length)), (2, min(57, max_length))):
        feeds = random_feeds(rng, embeddings, b, s, uses_tt, pad_last_row=False)
        feeds["w_logit"] = np.zeros((b, n_labels), dtype=np.float32)
        feeds["w_prob"] = np.zeros((b, n_labels), dtype=np.float32)
        feeds["w_top"] = np.tile(np.array([[0.0, 1.0]], dtype=np.float32), (b, 1))
        g32, g8 = (sess.run(["grad"], feeds)[0] for sess in sessions)
        rel = max(rel, _rel(g8, g32))
        n32, n8 = np.linalg.norm(g32, axis=-1), np.linalg.norm(g8, axis=-1)
        corr += [spearman(x, y) for x, y in zip(n32, n8) if s > 2]
    return {"reference": "float32 gradient graph, random token sequences", "rank_correlation_mean": float(np.mean(corr)),
            "rank_correlation_min": float(np.min(corr)), "max_relative_error": rel}


def forward_int8_fidelity(bundle_dir: Path, float_file: str, int8_file: str, embeddings: np.ndarray, uses_tt: bool,
                          max_length: int) -> dict[str, Any]:
    """Class probabilities of the int8 forward graph against the float32 one on random token sequences, one
    sequence a call (as the runtime runs int8 graphs): the largest and mean absolute difference, and how often the
    arg-max class agrees."""
    import onnxruntime as ort

    from .validate import random_feeds

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sessions = [ort.InferenceSession(str(bundle_dir / f), so, providers=["CPUExecutionProvider"]) for f in (float_file, int8_file)]
    rng = np.random.default_rng(4322)
    diffs: list[float] = []
    agree: list[float] = []
    for s in (min(8, max_length), min(24, max_length), min(57, max_length)):
        feeds = random_feeds(rng, embeddings, 4, s, uses_tt, pad_last_row=False)
        for r in range(4):
            row = {k: v[r:r + 1] for k, v in feeds.items()}
            p32, p8 = (_softmax(sess.run(["logits"], row)[0].astype(np.float64)) for sess in sessions)
            diffs.append(float(np.abs(p32 - p8).max()))
            agree.append(float(np.mean(p32.argmax(-1) == p8.argmax(-1))))
    return {"reference": "float32 forward graph, random token sequences (probabilities)",
            "max_abs_probability_difference": max(diffs), "mean_abs_probability_difference": float(np.mean(diffs)),
            "argmax_agreement": float(np.mean(agree)), "n": len(diffs)}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
