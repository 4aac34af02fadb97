"""Texts a second on SST-2 sentences: the local engine against the Ray engine on the same cores.

Configurations: local (one session, --threads threads), Ray with 1 worker x --threads threads, Ray with --threads
workers x 1 thread. Ray runs the whole command path (read JSONL in parallel, actor pool, write Parquet), so its time
includes starting the actors and loading a bundle in each; the local engine's includes loading the bundle too. Each
Ray result is checked against the local one (max |score difference|). Prints the ratios; writes a JSON record.

    python scripts/benchmark_ray.py /tmp/ray-bundle --n-ig 200 --n-saliency 2000 --out scripts/results/ray.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")


def sentences(path: Path, n: int) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(line.rstrip("\n").split(" ", 1)[1])
            if len(out) == n:
                break
    return out


def local(bundle: str, method: str, texts: list[str], threads: int, steps: int) -> tuple[float, dict[str, list[float]]]:
    from xai_onnx.model import Model
    from xai_onnx.registry import make_explainer

    start = time.perf_counter()
    ex = make_explainer(Model(bundle, threads=threads), method, {"steps": steps})
    results = ex.explain(texts)
    seconds = time.perf_counter() - start
    return seconds, {f"t{i}": r.scores.tolist() for i, r in enumerate(results)}


def on_ray(bundle: str, method: str, texts: list[str], workers: int, threads: int, steps: int, work: Path,
           ref: dict[str, list[float]]) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    from xai_onnx.distributed.ray import run

    src = work / f"in-{method}.jsonl"
    src.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    out = work / f"out-{method}-{workers}x{threads}"
    s = run(str(src), bundle, str(out), method=method, workers=workers, threads_per_worker=threads,
            num_cpus=1.0 / workers, steps=steps, rows_per_block=max(1, len(texts) // (4 * workers)))
    table = pq.read_table(out, columns=["id", "scores", "error"]).to_pylist()
    diff = max(float(np.max(np.abs(np.asarray(r["scores"]) - np.asarray(ref[r["id"]])))) for r in table)
    return {"workers": workers, "threads_per_worker": threads, "seconds": s.seconds, "texts_per_second": s.texts_per_second,
            "rows_out": s.rows_out, "errors": s.errors, "max_abs_diff_vs_local": diff}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", default=str(Path(os.environ.get("XAI_ONNX_SHARED", "../shared")) / "data/sst2/stsa.binary.train"))
    ap.add_argument("--n-ig", type=int, default=200)
    ap.add_argument("--n-saliency", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2, help="cores to use: local threads, and Ray's CPUs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=args.threads, object_store_memory=200 * 2 ** 20, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="xrb-", dir="/tmp"))
    ray.data.DataContext.get_current().enable_progress_bars = False
    record: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads, "steps": args.steps,
                    "load_average_at_start": os.getloadavg(), "ray": ray.__version__, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for method, n in (("ig", args.n_ig), ("saliency", args.n_saliency)):
            texts = sentences(Path(args.data), n)
            secs, ref = local(args.bundle, method, texts, args.threads, args.steps)
            rec = {"n_texts": len(texts), "local": {"threads": args.threads, "seconds": secs,
                                                   "texts_per_second": len(texts) / secs}}
            rec["ray_1x"] = on_ray(args.bundle, method, texts, 1, args.threads, args.steps, Path(tmp), ref)
            rec["ray_Nx1"] = on_ray(args.bundle, method, texts, args.threads, 1, args.steps, Path(tmp), ref)
            rec["overhead_1x_vs_local"] = 1 - rec["ray_1x"]["texts_per_second"] / rec["local"]["texts_per_second"]
            rec["overhead_Nx1_vs_local"] = 1 - rec["ray_Nx1"]["texts_per_second"] / rec["local"]["texts_per_second"]
            rec["scaling_Nx1_vs_1x"] = rec["ray_Nx1"]["texts_per_second"] / rec["ray_1x"]["texts_per_second"]
            record["methods"][method] = rec
            print(f"{method} ({len(texts)} texts): local {rec['local']['texts_per_second']:.2f}/s; "
                  f"ray 1x{args.threads} {rec['ray_1x']['texts_per_second']:.2f}/s "
                  f"(overhead {100 * rec['overhead_1x_vs_local']:.1f} %); ray {args.threads}x1 "
                  f"{rec['ray_Nx1']['texts_per_second']:.2f}/s (overhead {100 * rec['overhead_Nx1_vs_local']:.1f} %); "
                  f"{args.threads}x1 / 1x{args.threads} = {rec['scaling_Nx1_vs_1x']:.2f}; max |diff| "
                  f"{max(rec['ray_1x']['max_abs_diff_vs_local'], rec['ray_Nx1']['max_abs_diff_vs_local']):.1e}",
                  flush=True)
    record["load_average_at_end"] = os.getloadavg()
    ray.shutdown()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
