"""Check an imported bundle's graphs without torch, on shapes the import never saw.

- Surgery: the cut forward graph fed ``embeddings[ids]`` against the original graph fed ``ids`` (logits, 1e-4).
- Gradient: its logits against the forward graph's (1e-4), and ``<grad, v>`` against the directional derivative of
  F along a random direction v (as long as the row's embeddings, padding excluded), by a fourth-order central
  difference of the float32 forward graph, ``(8 (z(x+hv) - z(x-hv)) - (z(x+2hv) - z(x-2hv))) / 12h``, taken on the
  logits z and carried through the softmax exactly in float64.
- Why 1e-3: the difference's truncation error grows as h^4 and its rounding error (float32 logits) as 1/h. On
  minilm-sst2 the error was 3.5e-3 of ``max |<grad, v>|`` at h = 1e-4, 4e-4 at 1e-3, 2.5e-5 at 1e-2 and 5e-4 at
  3e-2. Each row takes the best of h = 1e-3, 3e-3 and 1e-2: that is what float32 finite differences can confirm (the
  exporter's 1e-4 compares two exact gradients; a wrong gradient rule gives errors of order 1).
- The error is measured against the larger of ``max |<grad, v>|`` and ``|dF/dz|_1 * max |dz/dv|`` per row: where the
  probabilities saturate, ``<grad, v>`` is far smaller than the logits' own derivative, whose finite difference
  carries the error above.
- One-token rows are not differenced: minilm-sst2's logits move so little with a lone token's embedding that float32
  rounding swamps every step (errors of 5e-3 at every step from 1e-4 to 3e-2, while the gradient agreed with torch
  autograd to 2.5e-6 there); they are checked for their logits only, like rows over 64 tokens.
- Tasks: a token classifier's logits and weights carry a sequence axis (a random one-hot label per real position);
  for similarity the pooled ``features`` are compared with the original graph's token states pooled here in float64,
  and F is the cosine with a random ``other``, differenced through the features (its derivative exact in float64).
- Kinks: a step whose points change the sign of any ReLU (or Abs, Max, Min, Clip) input is not used for that row; a
  row with no usable step is skipped and counted (DistilBERT's head has a ReLU). At most a third may be skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError

SURGERY_TOLERANCE = 1e-4
FD_TOLERANCE = 1e-3
FD_STEPS = (1e-3, 3e-3, 1e-2)
FD_MAX_SEQUENCE = 64  # finite differences of longer rows cost time and check nothing shorter rows do not


def validation_shapes(max_length: int) -> list[tuple[int, int]]:
    wanted = [(1, 1), (2, 5), (3, max_length), (4, 18), (1, 33), (2, 64)]
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


def d_objective(logits: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """d F / d logits (batch[, sequence], labels) in float64 at ``logits``, the arg-max class taken there."""
    z = logits.astype(np.float64)
    p = _softmax(z)
    top = np.eye(z.shape[-1])[z.argmax(-1)]
    on_logit = w["w_logit"] + top * w["w_top"][..., :1]
    on_prob = w["w_prob"] + top * w["w_top"][..., 1:]
    return on_logit + p * (on_prob - (on_prob * p).sum(-1, keepdims=True))


def cosine(features: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos(features, other) per row (float64) and its derivative with respect to ``features``."""
    f, o = features.astype(np.float64), other.astype(np.float64)
    nf, no = np.linalg.norm(f, axis=-1, keepdims=True), np.linalg.norm(o, axis=-1, keepdims=True)
    den = np.maximum(nf * no, 1e-12)
    cos = (f * o).sum(-1, keepdims=True) / den
    return cos[:, 0], o / den - cos * f / np.maximum(nf**2, 1e-24)


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """The sentence embedding of encoder states (float64): mean over real tokens or the first token, then L2."""
    h = hidden.astype(np.float64)
    if pooling == "mean":
        m = mask[..., None].astype(np.float64)
        out = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    else:
        out = h[:, 0]
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


KINKS = ("Relu", "Abs", "Max", "Min", "Clip", "LeakyRelu")


def _probe(forward: Path) -> tuple[Any, list[str]]:
    """The forward graph with the inputs of its piecewise-linear nodes (ReLU, ...) as extra outputs: their signs tell
    whether a finite step crossed a kink. The pooling's own Max (a floor on the token count, or on the norm) is no
    kink the data reach."""
    import onnx

    model = onnx.load(str(forward))
    kinks = [n.input[0] for n in model.graph.node if n.op_type in KINKS and not n.name.startswith("pool/")]
    if kinks:
        model.graph.output.extend([onnx.ValueInfoProto(name=k) for k in kinks])
    return _session(model.SerializeToString()), kinks


def validate(original: Path, forward: Path, gradient: Path | None, embeddings: np.ndarray, n_labels: int,
             uses_tt: bool, max_length: int, fill_id: int, pad_ids: tuple[int, ...], *,
             task: str = "sequence-classification", original_output: str | None = None, pooling: str = "mean",
             normalize: bool = False) -> dict[str, Any]:
    """Return the measured errors; raise ValidationError beyond the tolerances (module docstring). ``pad_ids``: the
    tokenizer's pad id first, then ids the graph treats as padding (random tokens avoid them).

    ``task``: for ``token-classification`` the logits and the weights carry a sequence axis (one random one-hot
    weight row per real position); for ``similarity`` the forward graph's ``features`` are checked against the
    original graph's ``original_output`` pooled here (``pooling``, ``normalize``), and F is the cosine with a random
    ``other``, differenced through the features."""
    orig = _session(original)
    fwd, kinks = _probe(forward)
    grad = _session(gradient) if gradient is not None else None
    orig_inputs = {i.name for i in orig.get_inputs()}
    similarity = task == "similarity"
    out_name = "features" if similarity else "logits"
    rng = np.random.default_rng(2024)
    surgery_key = "surgery_features" if similarity else "surgery_logits"
    errors: dict[str, float] = {surgery_key: 0.0}
    kinds = ("cosine",) if similarity else ("logit", "prob", "top")
    if grad is not None:
        errors.update({"gradient_logits": 0.0, **{f"fd_{k}": 0.0 for k in kinds}})
    shapes = validation_shapes(max_length)
    checked = skipped = 0
    vocab = embeddings.shape[0]
    for b, s in shapes:
        ids = rng.integers(0, vocab, size=(b, s))
        ids[np.isin(ids, pad_ids)] = fill_id  # pads only where the mask says so
        mask = np.ones((b, s), dtype=np.int64)
        if s > 2:
            mask[-1, s // 2:] = 0
            ids[-1, s // 2:] = pad_ids[0]
        feeds: dict[str, np.ndarray] = {"inputs_embeds": embeddings[ids].astype(np.float32), "attention_mask": mask}
        if uses_tt:
            feeds["token_type_ids"] = np.zeros((b, s), dtype=np.int64)
        ref_feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": feeds.get("token_type_ids")}
        ref_out = [original_output] if original_output else None
        ref = orig.run(ref_out, {k: v.astype(_dtype(orig, k)) for k, v in ref_feeds.items() if k in orig_inputs and v is not None})[0]
        if similarity:
            ref = pool(ref, mask, pooling, normalize)
        out0, *at_x0 = fwd.run([out_name, *kinks], feeds)
        if task == "token-classification":  # padded positions' own logits are never read (RoBERTa's positions
            # there differ: Hugging Face counts them from the ids, from inputs_embeds they run on)
            errors[surgery_key] = max(errors[surgery_key], _rel(out0[mask == 1], ref[mask == 1]))
        else:
            errors[surgery_key] = max(errors[surgery_key], _rel(out0, ref))
        if grad is None:
            continue
        lead = (b,) if task == "sequence-classification" else (b, s) if task == "token-classification" else ()

        def weights(kind: str) -> dict[str, np.ndarray]:
            """The gradient graph's objective inputs: random one-hot rows (per position for a token classifier)."""
            if similarity:
                return {"other": rng.normal(size=(b, out0.shape[-1])).astype(np.float32)}
            w = {k: np.zeros((*lead, n_labels), np.float32) for k in ("w_logit", "w_prob")}
            w["w_top"] = np.zeros((*lead, 2), np.float32)
            if kind != "none":
                target = w["w_top"] if kind == "top" else w[f"w_{kind}"]
                np.put_along_axis(target, rng.integers(0, target.shape[-1], size=(*lead, 1)), 1.0, axis=-1)
                if task == "token-classification":
                    target *= mask[..., None]  # as the runtime sends them: padded positions weigh nothing
            return w

        def reference_f(out: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
            """F per row from the forward graph's output, float64: the cosine, or the gradient graph's logits."""
            return cosine(out, w["other"])[0][:, None] if similarity else out.astype(np.float64)

        if s < 2 or s > FD_MAX_SEQUENCE:  # the gradient graph's logits are still compared
            w = weights("none")
            out_l = grad.run(["logits"], {**feeds, **w})[0]
            errors["gradient_logits"] = max(errors["gradient_logits"], _rel(out_l, reference_f(out0, w)))
            continue
        valid = mask[..., None].astype(np.float32)
        for kind in kinds:
            w = weights(kind)
            out_l, g = grad.run(["logits", "grad"], {**feeds, **w})
            errors["gradient_logits"] = max(errors["gradient_logits"], _rel(out_l, reference_f(out0, w)))
            x0 = feeds["inputs_embeds"].astype(np.float64)
            v = rng.normal(size=x0.shape) * valid
            v *= np.sqrt((x0**2 * valid).sum(axis=(1, 2), keepdims=True) / np.maximum((v**2).sum(axis=(1, 2), keepdims=True), 1e-30))
            ad = (g.astype(np.float64) * v).sum(axis=(1, 2))
            dfdz = cosine(out0, w["other"])[1] if similarity else d_objective(out0, w)

            def f(t: float, v: np.ndarray = v) -> tuple[np.ndarray, np.ndarray]:
                """the output at x0 + t v, and per row whether every kink input kept its sign from x0"""
                x = (x0 + t * v).astype(np.float32)
                out = fwd.run([out_name, *kinks], {**feeds, "inputs_embeds": x})
                same = np.ones(b, dtype=bool)
                for k0, k in zip(at_x0, out[1:]):
                    kept = (k0 > 0) == (k > 0)
                    same &= kept.reshape(b, -1).all(-1) if k.shape[:1] == (b,) else bool(kept.all())
                return out[0].astype(np.float64), same

            jv, ok = [], []
            for h in FD_STEPS:  # d output along v; a step is usable for a row where no point crossed a kink
                (p1, s1), (m1, t1), (p2, s2), (m2, t2) = f(h), f(-h), f(2 * h), f(-2 * h)
                jv.append((8 * (p1 - m1) - (p2 - m2)) / (12 * h))
                ok.append(s1 & t1 & s2 & t2)
            fds = np.stack([(dfdz * d).reshape(b, -1).sum(-1) for d in jv])  # (steps, rows)
            # the scale the finite difference resolves: |dF/dz|_1 * max |d output|, per row (module docstring)
            resolved = np.abs(dfdz).reshape(b, -1).sum(-1) * np.abs(jv[-1]).reshape(b, -1).max(-1)
            scale = max(float(np.abs(ad).max()), float(resolved.max()), 1e-30)
            # a row whose every step crosses a kink (ReLU) cannot be checked by finite differences; elsewhere the best
            # kink-free step is compared
            usable = np.stack(ok)
            smooth = usable.any(axis=0)
            skipped += int((~smooth).sum())
            checked += int(smooth.sum())
            dev = np.where(usable, np.abs(fds - ad), np.inf).min(axis=0)
            err = float(dev[smooth].max()) if smooth.any() else 0.0
            errors[f"fd_{kind}"] = max(errors[f"fd_{kind}"], err / scale)
    if grad is not None and checked < 2 * skipped:
        raise ValidationError(f"finite differences could check only {checked} of {checked + skipped} rows (the forward graph "
                              "is not smooth there): import with --no-validate to skip the check")
    reference = (f"the original ONNX graph ({original_output or 'logits'}"
                 + (f", {pooling}-pooled{' and normalised' if normalize else ''} here" if similarity else "")
                 + "); directional finite differences of the forward graph "
                 f"(4th-order central, the better of steps {FD_STEPS} x the row's embedding norm) for the gradient")
    report = {"shapes": [list(x) for x in shapes], "max_relative_error": errors,
              "fd_rows": {"checked": checked, "skipped_not_smooth": skipped},
              "tolerance": {surgery_key: SURGERY_TOLERANCE, "gradient_logits": SURGERY_TOLERANCE, "fd": FD_TOLERANCE},
              "reference": reference}
    bad = {k: v for k, v in errors.items() if not v <= (FD_TOLERANCE if k.startswith("fd_") else SURGERY_TOLERANCE)}
    if bad:
        worst = ", ".join(f"{k} {v:.3g}" for k, v in bad.items())
        raise ValidationError(f"imported graphs failed validation: {worst} (tolerances: {report['tolerance']})")
    return report


def _dtype(session: Any, name: str) -> Any:
    t = next(i.type for i in session.get_inputs() if i.name == name)
    return np.int32 if "int32" in t else np.int64
