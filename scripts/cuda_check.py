"""Check the CUDA execution provider against the CPU one on a bundle: every method, same numbers, and timings.

Usage (on a machine with onnxruntime-gpu): python scripts/cuda_check.py BUNDLE
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np
import onnxruntime as ort

from xai_onnx import METHODS, Model

TEXTS = ["the movie was very good but the acting was awful and boring .", "i love it !", "bad",
         "the plot is not great , but the story and the acting are the best of the film and i love it ."]


def main(bundle: str) -> int:
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels, where installed
    print("onnxruntime", ort.__version__, ort.get_device(), ort.get_available_providers())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gpu = Model(bundle, providers=["CUDAExecutionProvider"])
        gpu._gradient_session()
    print("fallback warnings:", [str(w.message) for w in caught])
    cpu = Model(bundle)
    report = {"providers_forward": gpu._forward.get_providers(), "providers_gradient": gpu._gradient.get_providers()
              if gpu._gradient else None, "methods": {}}
    for name, cls in METHODS.items():
        a = cls(cpu).explain(TEXTS, target="all")
        t0 = time.perf_counter()
        b = cls(gpu).explain(TEXTS, target="all")
        secs = time.perf_counter() - t0
        err = max(float(np.abs(x.scores - y.scores).max() / max(np.abs(x.scores).max(), 1e-12)) for x, y in zip(a, b))
        report["methods"][name] = {"max_rel_diff_vs_cpu": err, "gpu_seconds": secs}
        print(f"{name:<14} max |gpu - cpu| / max|cpu| = {err:.2e}   gpu {secs:.3f} s")
    # float32 finite differences divide output noise by 2 * epsilon: they agree to about 1e-2, the rest to 1e-4
    limits = {name: (5e-2 if name == "fd" else 1e-4) for name in METHODS}
    ok = "CUDAExecutionProvider" in report["providers_forward"] and all(
        m["max_rel_diff_vs_cpu"] <= limits[name] for name, m in report["methods"].items())
    report["ok"] = ok
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
