"""Check the exported graphs in onnxruntime against torch autograd on shapes the trace never saw."""

from __future__ import annotations

from collections.abc import Callable
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


def _objective_inputs(rng: np.random.Generator, task: str, kind: str, b: int, s: int, n_labels: int,
                      feature_dim: int) -> dict[str, np.ndarray]:
    """Random one-hot objective weights of one kind (logit, prob, top) for a classifier's gradient graph, or a
    random ``other`` encoding for a similarity graph."""
    if task == "similarity":
        return {"other": rng.normal(size=(b, feature_dim)).astype(np.float32)}
    lead = (b, s) if task == "token-classification" else (b,)
    target = np.zeros((*lead, n_labels), dtype=np.float32)
    idx = np.indices(lead).reshape(len(lead), -1)
    if task == "token-classification":  # a few positions of each row, as explaining several entities at once does
        keep = rng.random(idx.shape[1]) < 0.5
        keep[0] = True
        idx = idx[:, keep]
    target[(*idx, rng.integers(0, n_labels, size=idx.shape[1]))] = 1.0
    zeros = np.zeros_like(target)
    w_logit, w_prob = (target, zeros) if kind == "logit" else (zeros, target) if kind == "prob" else (zeros, zeros)
    w_top = np.zeros((*lead, 2), dtype=np.float32)
    if kind == "top":  # the arg-max class: its logit in some rows, its probability in the others
        w_top[(*idx, rng.integers(0, 2, size=idx.shape[1]))] = 1.0
    return {"w_logit": w_logit, "w_prob": w_prob, "w_top": w_top}


def validate(forward_path: Path, gradient_path: Path | None, functions: tuple[Any, Any], embeddings: np.ndarray,
             n_labels: int, uses_tt: bool, max_length: int, trace_shape: tuple[int, int],
             tolerance: float = TOLERANCE, task: str = "sequence-classification",
             feature_dim: int = 0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Return the measured errors; raise ValidationError if any exceeds ``tolerance``. ``progress`` is told each
    shape's largest error as it is checked."""
    import onnxruntime as ort

    forward_fn, gradient_fn = functions
    so = ort.SessionOptions()
    so.log_severity_level = 3
    fwd = ort.InferenceSession(str(forward_path), so, providers=["CPUExecutionProvider"])
    grad = ort.InferenceSession(str(gradient_path), so, providers=["CPUExecutionProvider"]) if gradient_path else None
    rng = np.random.default_rng(1234)
    outputs = ["features"] if task == "similarity" else ["logits", "features"]
    kinds = ("similarity",) if task == "similarity" else ("logit", "prob", "top")
    errors: dict[str, float] = {**{k: 0.0 for k in outputs}, **{f"grad_{k}": 0.0 for k in kinds}}
    if task == "similarity":
        errors["logits"] = 0.0
    shapes = validation_shapes(max_length, trace_shape)
    for b, s in shapes:
        here: dict[str, float] = {}  # this shape's errors

        def note(key: str, err: float) -> None:
            here[key] = max(here.get(key, 0.0), err)
            errors[key] = max(errors[key], err)

        feeds = random_feeds(rng, embeddings, b, s, uses_tt, pad_last_row=True)
        t_in = [torch.from_numpy(v) for v in feeds.values()]
        refs = [t.numpy() for t in forward_fn(*t_in)]
        for name, out, ref in zip(outputs, fwd.run(outputs, feeds), refs):
            if task == "token-classification":  # padded positions are not compared: nothing reads them
                keep = feeds["attention_mask"].astype(bool)
                out, ref = out[keep], ref[keep]
            note(name, _rel(out, ref))
        for kind in kinds if grad is not None else ():
            weights = _objective_inputs(rng, task, kind, b, s, n_labels, feature_dim)
            if task == "token-classification":  # no weight on padded positions: the runtime never puts one there
                for w in weights.values():
                    w[~feeds["attention_mask"].astype(bool)] = 0.0
            ref_l, ref_g = (t.numpy() for t in gradient_fn(*t_in, *(torch.from_numpy(w) for w in weights.values())))
            assert grad is not None
            out_l, out_g = grad.run(["logits", "grad"], {**feeds, **weights})
            if task == "token-classification":
                keep = feeds["attention_mask"].astype(bool)
                out_l, ref_l = out_l[keep], ref_l[keep]
            # padded positions get no gradient in either; compare where it can be non-zero
            note("logits", _rel(out_l, ref_l))
            note(f"grad_{kind}", _rel(out_g, ref_g))
        if progress is not None and here:
            worst = max(here, key=lambda k: here[k])
            progress(f"shape {b} x {s}: largest relative error {here[worst]:.1e} ({worst}), "
                     f"{'within' if here[worst] <= tolerance else 'OVER'} {tolerance:g}")
    if grad is None:
        for kind in kinds:
            del errors[f"grad_{kind}"]
        if task == "similarity":
            del errors["logits"]
    report = {"tolerance": tolerance, "shapes": [list(s) for s in shapes], "max_relative_error": errors,
              "reference": "torch autograd"}
    bad = {k: v for k, v in errors.items() if not v <= tolerance}
    if bad:
        worst = ", ".join(f"{k} {v:.3g}" for k, v in bad.items())
        raise ValidationError(f"exported graphs disagree with torch beyond {tolerance:g} relative error: {worst}")
    return report
