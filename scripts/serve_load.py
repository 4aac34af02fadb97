"""200 concurrent /v1/explain requests on a cold `xai-onnx serve`: errors, latency p50/p99, the server's peak RSS.

    python scripts/serve_load.py BUNDLE [--requests 200] [--code DIR ...] [--out scripts/results/serve_load.json]

Each ``--code DIR`` runs the same load against the xai_onnx found in DIR (e.g. an older checkout) as well, in the
same run, and the table gives each one's figures and ratios to the first. The server starts fresh for each (a cold
start: no session built yet) on 127.0.0.1, and is stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TEXTS = ["a gripping, beautifully acted film", "the plot is thin and the jokes fall flat",
         "not the best movie of the year, but a fun ride", "an utterly forgettable sequel",
         "it is dull , predictable and far too long", "a warm and funny portrait of a family"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def post(port: int, body: dict, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/explain", body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status, time.monotonic() - started
    except OSError:
        return -1, time.monotonic() - started
    finally:
        conn.close()


def run(bundle: str, code: str | None, n: int, steps: int, timeout: float, serve_args: list[str]) -> dict:
    port = free_port()
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = code + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "xai_onnx.cli", "serve", bundle, "--port", str(port), *serve_args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=code or Path(__file__).resolve().parents[1])  # `-m` puts the working directory first
    err: list[bytes] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 120
        while True:  # the port is open: nothing has been asked of the model yet (no gradient session)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start: " + b"".join(err).decode()[-2000:]) from None
                time.sleep(0.2)
        bodies = [{"texts": [TEXTS[i % len(TEXTS)]], "method": "ig", "steps": steps} for i in range(n)]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=n) as pool:
            answers = list(pool.map(lambda b: post(port, b, timeout), bodies))
        wall = time.monotonic() - started
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    lat = sorted(t for _, t in answers)
    statuses: dict[str, int] = {}
    for s, _ in answers:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    return {"code": code or "(this checkout)", "serve_args": serve_args, "requests": n,
            "errors": sum(1 for s, _ in answers if s != 200),
            "statuses": statuses, "p50_s": lat[len(lat) // 2], "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "wall_s": wall, "peak_rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=300, help="client timeout per request, seconds")
    ap.add_argument("--code", action="append", default=[], help="another checkout's directory to compare (repeatable)")
    ap.add_argument("--serve-args", default="", help="options for this checkout's `xai-onnx serve` (e.g. '--timeout 300')")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = [run(args.bundle, None, args.requests, args.steps, args.timeout, args.serve_args.split())]
    rows += [run(args.bundle, c, args.requests, args.steps, args.timeout, []) for c in args.code]
    base = rows[0]
    print(f"{'code':<28} {'errors':>6} {'p50 s':>8} {'p99 s':>8} {'wall s':>8} {'peak RSS MB':>12}  statuses")
    for r in rows:
        ratio = "" if r is base else (f"  (x{r['p50_s'] / base['p50_s']:.2f} p50, x{r['peak_rss_mb'] / base['peak_rss_mb']:.2f} RSS"
                                      " vs this checkout)")
        print(f"{r['code'][-28:]:<28} {r['errors']:>6} {r['p50_s']:>8.2f} {r['p99_s']:>8.2f} {r['wall_s']:>8.2f} "
              f"{r['peak_rss_mb']:>12.0f}  {r['statuses']}{ratio}")
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "bundle": str(Path(args.bundle)), "steps": args.steps,
              "runs": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
