"""Check an imported bundle's graphs without torch, on shapes the import never saw.

- Surgery: the cut forward graph fed ``embeddings[ids]`` against the original graph fed ``ids`` (logits).
- Gradient: its logits against the forward graph's, and ``<grad, v>`` against the directional derivative of F along a
  random direction v, by a fourth-order central difference of the float32 forward graph:
  ``(8 (F(x+hv) - F(x-hv)) - (F(x+2hv) - F(x-2hv))) / 12h``. Its truncation error is O(h^4) and its rounding error
  about eps32 * |F| / h; with h = 0.1 (relative to the embeddings' scale) both stay near 1e-4 of the directional
  derivative, so the tolerance is 2e-3 of ``max |<grad, v>|`` over the rows (float32 allows no tighter a check by
  finite differences; the exporter's 1e-4 compares two exact gradients).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError

SURGERY_TOLERANCE = 1e-4
FD_TOLERANCE = 2e-3
FD_STEP = 1e-1


def validation_shapes(max_length: int) -> list[tuple[int, int]]:
    wanted = [(1, 1), (2, 5), (3, max_length), (4, 18), (1, 33)]
    out: list[tuple[int, int]] = []
    for b, s in wanted:
        s = min(s, max_length)
        if (b, s) not in out:
            out.append((b, s))
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def _session(path: Path | bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so, providers=["CPUExecutionProvider"])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _objective(logits: np.ndarray, w: dict[str, np.ndarray], top: np.ndarray) -> np.ndarray:
    """F per row, in float64, with the arg-max class fixed at the unperturbed point."""
    z = logits.astype(np.float64)
    p = _softmax(z)
    rows = np.arange(z.shape[0])
    return ((w["w_logit"] * z + w["w_prob"] * p).sum(-1) + w["w_top"][:, 0] * z[rows, top] + w["w_top"][:, 1] * p[rows, top])


def validate(original: Path, forward: Path, gradient: Path | None, embeddings: np.ndarray, n_labels: int,
             uses_tt: bool, max_length: int, fill_id: int, pad_id: int) -> dict[str, Any]:
    """Return the measured errors; raise ValidationError beyond the tolerances (module docstring)."""
    orig, fwd = _session(original), _session(forward)
    grad = _session(gradient) if gradient is not None else None
    orig_inputs = {i.name for i in orig.get_inputs()}
    rng = np.random.default_rng(2024)
    errors: dict[str, float] = {"surgery_logits": 0.0}
    if grad is not None:
        errors.update({"gradient_logits": 0.0, "fd_logit": 0.0, "fd_prob": 0.0, "fd_top": 0.0})
    scale = float(np.abs(embeddings).mean()) or 1.0
    shapes = validation_shapes(max_length)
    vocab = embeddings.shape[0]
    for b, s in shapes:
        ids = rng.integers(0, vocab, size=(b, s))
        ids[ids == pad_id] = fill_id  # pads only where the mask says so
        mask = np.ones((b, s), dtype=np.int64)
        if s > 2:
            mask[-1, s // 2:] = 0
            ids[-1, s // 2:] = pad_id
        feeds: dict[str, np.ndarray] = {"inputs_embeds": embeddings[ids].astype(np.float32), "attention_mask": mask}
        if uses_tt:
            feeds["token_type_ids"] = np.zeros((b, s), dtype=np.int64)
        ref_feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": feeds.get("token_type_ids")}
        ref = orig.run(None, {k: v.astype(_dtype(orig, k)) for k, v in ref_feeds.items() if k in orig_inputs and v is not None})[0]
        logits = fwd.run(["logits"], feeds)[0]
        errors["surgery_logits"] = max(errors["surgery_logits"], _rel(logits, ref))
        if grad is None:
            continue
        top = logits.argmax(-1)
        valid = mask[..., None].astype(np.float32)
        for kind in ("logit", "prob", "top"):
            w = {k: np.zeros((b, n_labels), np.float32) for k in ("w_logit", "w_prob")}
            w["w_top"] = np.zeros((b, 2), np.float32)
            if kind == "top":
                w["w_top"][np.arange(b), rng.integers(0, 2, size=b)] = 1.0
            else:
                w[f"w_{kind}"][np.arange(b), rng.integers(0, n_labels, size=b)] = 1.0
            out_l, g = grad.run(["logits", "grad"], {**feeds, **w})
            errors["gradient_logits"] = max(errors["gradient_logits"], _rel(out_l, logits))
            v = rng.normal(size=feeds["inputs_embeds"].shape).astype(np.float32) * valid
            h = FD_STEP * scale

            def f(t: float, v: np.ndarray = v, w: dict[str, np.ndarray] = w) -> np.ndarray:
                x = (feeds["inputs_embeds"].astype(np.float64) + t * v).astype(np.float32)
                return _objective(fwd.run(["logits"], {**feeds, "inputs_embeds": x})[0], w, top)

            fd = (8 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12 * h)
            ad = (g.astype(np.float64) * v).sum(axis=(1, 2))
            errors[f"fd_{kind}"] = max(errors[f"fd_{kind}"], float(np.abs(fd - ad).max() / max(np.abs(ad).max(), 1e-12)))
    report = {"shapes": [list(x) for x in shapes], "max_relative_error": errors,
              "tolerance": {"surgery_logits": SURGERY_TOLERANCE, "gradient_logits": SURGERY_TOLERANCE, "fd": FD_TOLERANCE},
              "reference": "the original ONNX graph (logits); directional finite differences of the forward graph "
                           f"(4th-order central, step {FD_STEP} x mean |embedding|) for the gradient"}
    bad = {k: v for k, v in errors.items() if not v <= (FD_TOLERANCE if k.startswith("fd_") else SURGERY_TOLERANCE)}
    if bad:
        worst = ", ".join(f"{k} {v:.3g}" for k, v in bad.items())
        raise ValidationError(f"imported graphs failed validation: {worst} (tolerances: {report['tolerance']})")
    return report


def _dtype(session: Any, name: str) -> Any:
    t = next(i.type for i in session.get_inputs() if i.name == name)
    return np.int32 if "int32" in t else np.int64
