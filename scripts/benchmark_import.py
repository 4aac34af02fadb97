"""The imported gradient graph against the exported one: minilm-sst2 exported by optimum and imported (`xai-onnx import`),
and exported by `xai-onnx export` from the same checkpoint; both gradient graphs timed at 50 x 25 and 1 x 25 tokens
with the same threads in one run (calls interleaved), and the import itself timed.

    python scripts/benchmark_import.py [--threads 2] [--repeats 20] [--out scripts/results/benchmark_import.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT.parent / "shared" / "models" / "minilm-sst2"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown")


def _session_and_feeds(bundle: Path, batch: int, seq: int, threads: int) -> tuple[object, dict[str, np.ndarray]]:
    from xai_onnx.manifest import Manifest
    from xai_onnx.session import create_session

    m = Manifest.load(bundle)
    assert m.gradient is not None
    sess = create_session(bundle / m.gradient.file, ["CPUExecutionProvider"], threads)
    rng = np.random.default_rng(0)
    emb = np.load(bundle / m.embeddings_file, mmap_mode="r")
    ids = rng.integers(1000, emb.shape[0], size=(batch, seq))
    feeds = {m.gradient.inputs["inputs_embeds"]: np.asarray(emb[ids], np.float32),
             m.gradient.inputs["attention_mask"]: np.ones((batch, seq), np.int64),
             m.gradient.inputs["w_logit"]: np.zeros((batch, len(m.labels)), np.float32),
             m.gradient.inputs["w_prob"]: np.zeros((batch, len(m.labels)), np.float32)}
    if "token_type_ids" in m.gradient.inputs:
        feeds[m.gradient.inputs["token_type_ids"]] = np.zeros((batch, seq), np.int64)
    if "w_top" in m.gradient.inputs:
        feeds[m.gradient.inputs["w_top"]] = np.tile(np.array([[0.0, 1.0]], np.float32), (batch, 1))
    return sess, feeds


def time_gradients(bundles: list[Path], batch: int, seq: int, threads: int, repeats: int) -> list[float]:
    """Median seconds of one gradient call per bundle, the bundles' calls interleaved (A B A B ...) so that a change
    in the machine's load falls on both alike."""
    runs = [_session_and_feeds(b, batch, seq, threads) for b in bundles]
    for sess, feeds in runs:
        for _ in range(3):
            sess.run(None, feeds)  # type: ignore[attr-defined]
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for k, (sess, feeds) in enumerate(runs):
            t = time.perf_counter()
            sess.run(None, feeds)  # type: ignore[attr-defined]
            times[k].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--exported", default=None, help="an existing `xai-onnx export` bundle of minilm-sst2 (default: export one)")
    p.add_argument("--work", default=None, help="keep the exports here (default: a temporary directory)")
    p.add_argument("--out", default=str(ROOT / "scripts" / "results" / "benchmark_import.json"))
    args = p.parse_args()
    if not (MODEL / "config.json").is_file():
        print(f"{MODEL} not found", file=sys.stderr)
        return 2
    from optimum.exporters.onnx import main_export
    from xai_onnx_exporters import export_bundle
    from xai_onnx_exporters.onnx_import import import_bundle

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="xai-onnx-bench-import."))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "optimum" / "model.onnx").is_file():
        main_export(model_name_or_path=str(MODEL), output=str(work / "optimum"), task="text-classification")
    t = time.perf_counter()
    imported = import_bundle(work / "optimum", work / "imported", overwrite=True)
    import_seconds = time.perf_counter() - t
    exported = Path(args.exported) if args.exported else work / "exported"
    if not (exported / "manifest.json").is_file():
        export_bundle(MODEL, exported, overwrite=True)
    results: dict[str, object] = {"cpu": cpu_name(), "threads": args.threads, "repeats": args.repeats,
                                  "import_seconds": round(import_seconds, 2),
                                  "import_validation": imported.validation.get("max_relative_error")}
    results["load_average_at_start"] = os.getloadavg()
    for batch, seq in ((50, 25), (1, 25)):
        t_imp, t_exp = time_gradients([work / "imported", exported], batch, seq, args.threads, args.repeats)
        results[f"{batch}x{seq}"] = {"imported_s": round(t_imp, 5), "exported_s": round(t_exp, 5), "ratio": round(t_imp / t_exp, 3)}
    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
