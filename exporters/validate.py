"""Check the exported graphs in onnxruntime against torch autograd on shapes the trace never saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ValidationError

TOLERANCE = 1e-4


def validation_shapes(max_length: int, trace_shape: tuple[int, int]) -> list[tuple[int, int]]:
    wanted = [(1, 1), (2, 5), (3, max_length), (4, 18), (1, 33)]
    shapes = []
    for b, s in wanted:
        s = min(s, max_length)
        if (b, s) != trace_shape and (b, s) not in shapes:
            shapes.append((b, s))
    return shapes


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def random_feeds(rng: np.random.Generator, embeddings: np.ndarray, batch: int, seq: int, uses_tt: bool,
                 pad_last_row: bool) -> dict[str, np.ndarray]:
    """Forward-graph inputs for random token ids: embeddings, attention mask (the last row right-padded from the
    middle when ``pad_last_row`` and seq > 2), token type ids where the model takes them."""
    ids = rng.integers(0, embeddings.shape[0], size=(batch, seq))
    mask = np.ones((batch, seq), dtype=np.int64)
    if pad_last_row and seq > 2:
        mask[-1, seq // 2:] = 0
    feeds: dict[str, np.ndarray] = {"inputs_embeds": embeddings[ids].astype(np.float32), "attention_mask": mask}
    if uses_tt:
        feeds["token_type_ids"] = np.zeros((batch, seq), dtype=np.int64)
    return feeds


def validate(forward_path: Path, gradient_path: Path | None, functions: tuple[Any, Any], embeddings: np.ndarray,
             n_labels: int, uses_tt: bool, max_length: int, trace_shape: tuple[int, int],
             tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Return the measured errors; raise ValidationError if any exceeds ``tolerance``."""
    import onnxruntime as ort

    forward_fn, gradient_fn = functions
    so = ort.SessionOptions()
    so.log_severity_level = 3
    fwd = ort.InferenceSession(str(forward_path), so, providers=["CPUExecutionProvider"])
    grad = ort.InferenceSession(str(gradient_path), so, providers=["CPUExecutionProvider"]) if gradient_path else None
    rng = np.random.default_rng(1234)
    errors: dict[str, float] = {"logits": 0.0, "features": 0.0, "grad_logit": 0.0, "grad_prob": 0.0, "grad_top": 0.0}
    shapes = validation_shapes(max_length, trace_shape)
    for b, s in shapes:
        feeds = random_feeds(rng, embeddings, b, s, uses_tt, pad_last_row=True)
        t_in = [torch.from_numpy(v) for v in feeds.values()]
        ref_logits, ref_feats = (t.numpy() for t in forward_fn(*t_in))
        logits, feats = fwd.run(["logits", "features"], feeds)
        errors["logits"] = max(errors["logits"], _rel(logits, ref_logits))
        errors["features"] = max(errors["features"], _rel(feats, ref_feats))
        if grad is None:
            continue
        for kind in ("logit", "prob", "top"):
            target = np.zeros((b, n_labels), dtype=np.float32)
            target[np.arange(b), rng.integers(0, n_labels, size=b)] = 1.0
            zeros = np.zeros_like(target)
            w_logit, w_prob = (target, zeros) if kind == "logit" else (zeros, target) if kind == "prob" else (zeros, zeros)
            w_top = np.zeros((b, 2), dtype=np.float32)
            if kind == "top":  # the arg-max class: its logit in some rows, its probability in the others
                w_top[np.arange(b), rng.integers(0, 2, size=b)] = 1.0
            weights = {"w_logit": w_logit, "w_prob": w_prob, "w_top": w_top}
            ref_l, ref_g = (t.numpy() for t in gradient_fn(*t_in, *(torch.from_numpy(w) for w in weights.values())))
            out_l, out_g = grad.run(["logits", "grad"], {**feeds, **weights})
            # padded positions get no gradient in either; compare where it can be non-zero
            errors["logits"] = max(errors["logits"], _rel(out_l, ref_l))
            errors[f"grad_{kind}"] = max(errors[f"grad_{kind}"], _rel(out_g, ref_g))
    if grad is None:
        del errors["grad_logit"], errors["grad_prob"], errors["grad_top"]
    report = {"tolerance": tolerance, "shapes": [list(s) for s in shapes], "max_relative_error": errors,
              "reference": "torch autograd"}
    bad = {k: v for k, v in errors.items() if not v <= tolerance}
    if bad:
        worst = ", ".join(f"{k} {v:.3g}" for k, v in bad.items())
        raise ValidationError(f"exported graphs disagree with torch beyond {tolerance:g} relative error: {worst}")
    return report
