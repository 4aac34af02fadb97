"""Speed, memory and accuracy of xai-onnx against Captum on the same model, inputs and thread count.

    python scripts/benchmark.py BUNDLE HF_MODEL_DIR [--data FILE] [--n 100] [--threads 2] [--out FILE.json]

For each method (ig, ig_adaptive, saliency, occlusion; and ig_int8, saliency_int8 with the int8
gradient graph of a bundle exported with --int8) one child process runs ours and Captum alternately on the same
sentences, twice over (the medians of the repeats are kept): latency is a loop over the sentences one at a time
(batch 1, what a service sees), throughput one call over all of them. Attributions are compared with Captum's
(max |ours - captum| / max |captum| per sentence, worst and mean; Spearman rank correlation of the non-special
tokens' scores, mean and min). Peak memory (max RSS) comes from two more
children per method, one running only ours and one only Captum. Cold start is `import` plus loading, in a fresh
process each. A benchmark, not a test: CI only checks that it runs on a tiny model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("ig", "ig_adaptive", "saliency", "occlusion")
# run when the bundle has an int8 gradient graph (export --int8): the same methods, precision="int8" (adaptive IG
# refuses int8: its completeness checks need float32 values of F)
INT8_METHODS = ("ig_int8", "saliency_int8")


def read_sentences(path: str | None, n: int) -> list[str]:
    if path is None:
        base = ["a gripping , funny and moving film .", "one long string of cliches .", "not bad at all",
                "the acting is wooden and the plot is thin , but the music is lovely ."]
        return (base * (n // len(base) + 1))[:n]
    from xai_onnx.io import read_labelled

    return [t for t, _ in read_labelled(path)][:n]


# ---- the two implementations -----------------------------------------------------------------------------------------
class Ours:
    def __init__(self, bundle: str, threads: int):
        from xai_onnx import Model

        self.bundle, self.threads = bundle, threads
        self.model = Model(bundle, threads=threads)
        self.int8_model: Any = None
        self.steps: list[int] = []  # IG steps per text of the last run

    def explainer(self, method: str):
        from xai_onnx import IntegratedGradients, Model, Occlusion, Saliency

        model = self.model
        if method.endswith("_int8"):
            if self.int8_model is None:
                self.int8_model = Model(self.bundle, threads=self.threads, precision="int8")
            model, method = self.int8_model, method[:-len("_int8")]
        if method == "ig":
            return IntegratedGradients(model, n_steps=50)
        if method == "ig_adaptive":
            return IntegratedGradients(model, adaptive=True, tolerance=0.01)
        return Saliency(model) if method == "saliency" else Occlusion(model, window=1)

    def run(self, method: str, texts: list[str]) -> tuple[list[np.ndarray], list[float | None], list[int]]:
        res = self.explainer(method).explain(texts)
        self.steps = [int(r.settings.get("steps_used", r.settings.get("n_steps", 0))) for r in res]
        return [r.scores for r in res], [r.convergence_delta for r in res], [r.target.index for r in res]


class Reference:
    """Captum on the Hugging Face model, as its documentation shows for BERT-style classifiers."""

    def __init__(self, model_dir: str, threads: int, max_length: int):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.hf = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
        self.max_length = max_length

    def _inputs(self, text: str):
        enc = self.tok(text, return_tensors="pt", truncation=True, max_length=self.max_length)
        ids = enc["input_ids"]
        base = ids.clone()
        base[0, 1:-1] = self.tok.pad_token_id  # one sentence: [CLS] ... [SEP]; an [UNK] in the text is content
        extra = {k: v for k, v in enc.items() if k in ("attention_mask", "token_type_ids")}
        return ids, base, extra

    def run(self, method: str, texts: list[str], targets: list[int]) -> tuple[list[np.ndarray], list[float | None]]:
        from captum.attr import LayerIntegratedGradients, Occlusion, Saliency

        torch, hf = self.torch, self.hf
        emb = hf.get_input_embeddings()
        scores, deltas = [], []
        for text, target in zip(texts, targets):
            ids, base, extra = self._inputs(text)
            keys = tuple(extra)

            def prob_ids(input_ids, *args):
                return torch.softmax(hf(input_ids=input_ids, **dict(zip(keys, args))).logits, -1)

            def prob_emb(embeds, *args):
                return torch.softmax(hf(inputs_embeds=embeds, **dict(zip(keys, args))).logits, -1)

            args = tuple(extra.values())
            if method.startswith("ig"):
                attr, delta = LayerIntegratedGradients(prob_ids, emb).attribute(
                    ids, baselines=base, additional_forward_args=args, target=target, n_steps=50,
                    method="gausslegendre", return_convergence_delta=True)
                scores.append(attr.sum(-1)[0].detach().numpy())
                deltas.append(float(delta))
            elif method.startswith("saliency"):
                e = emb(ids).detach()
                g = Saliency(prob_emb).attribute(e, target=target, abs=False, additional_forward_args=args)
                scores.append(g[0].norm(dim=-1).numpy())
                deltas.append(None)
            else:
                e, b = emb(ids).detach(), emb(base).detach()
                h = e.shape[-1]
                with torch.no_grad():
                    a = Occlusion(prob_emb).attribute(e, sliding_window_shapes=(1, h), strides=(1, h), baselines=b,
                                                      target=target, additional_forward_args=args)
                scores.append(a[0, :, 0].numpy())
                deltas.append(None)
        return scores, deltas


# ---- children -----------------------------------------------------------------------------------------------------------
def max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_time(args: argparse.Namespace) -> dict:
    """Ours and Captum alternately on the same sentences; medians of the repeats."""
    texts = read_sentences(args.data, args.n)
    ours = Ours(args.bundle, args.threads)
    ref = Reference(args.model, args.threads, ours.model.manifest.max_length)
    method = args.method
    ours.run(method, texts[:1])  # warm-up: session creation, first-run allocations
    targets = ours.run("saliency", texts)[2]
    ref.run(method, texts[:1], targets[:1])
    lat_o, lat_r, thr_o, thr_r = [], [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for t in texts:
            ours.run(method, [t])
        lat_o.append((time.perf_counter() - t0) / len(texts))
        t0 = time.perf_counter()
        o_scores, o_deltas, _ = ours.run(method, texts)
        thr_o.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r_scores, r_deltas = ref.run(method, texts, targets)
        thr_r.append(time.perf_counter() - t0)
        lat_r.append(thr_r[-1] / len(texts))  # Captum explains one sentence at a time either way
    out = {"method": method, "n": len(texts), "ours_latency_s": statistics.median(lat_o),
           "captum_latency_s": statistics.median(lat_r), "ours_throughput_s": statistics.median(thr_o),
           "captum_throughput_s": statistics.median(thr_r)}
    out["latency_ratio"] = out["ours_latency_s"] / out["captum_latency_s"]
    out["throughput_ratio"] = out["ours_throughput_s"] / out["captum_throughput_s"]
    diffs = [float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)) for a, b in zip(o_scores, r_scores)]
    out["max_rel_diff_vs_captum"] = max(diffs)
    out["mean_rel_diff_vs_captum"] = float(np.mean(diffs))
    from xai_onnx.evaluation import spearman

    corr = [spearman(a[1:-1], b[1:-1]) for a, b in zip(o_scores, r_scores) if len(a) > 4]  # special tokens left out
    out["rank_correlation_vs_captum_mean"] = float(np.mean(corr))
    out["rank_correlation_vs_captum_min"] = float(np.min(corr))
    if method.startswith("ig_adaptive"):
        # |delta| / |F(x) - F(b)|, where F(x) - F(b) = sum(scores) - delta; Captum's at its 50 steps alongside
        def rel(scores: list[np.ndarray], deltas: list[float | None]) -> list[float]:
            return [abs(d) / max(abs(float(np.sum(s)) - d), 1e-12) for s, d in zip(scores, deltas) if d is not None]

        out["max_relative_delta"] = max(rel(o_scores, o_deltas))
        out["captum_max_relative_delta"] = max(rel(r_scores, r_deltas))
        out["mean_steps"] = float(np.mean(ours.steps))
        out["max_steps"] = int(max(ours.steps))
    return out


def child_memory(args: argparse.Namespace) -> dict:
    """One implementation alone in this process, so its peak RSS is its own (the target does not change the work)."""
    texts = read_sentences(args.data, args.n)
    if args.which == "ours":
        Ours(args.bundle, args.threads).run(args.method, texts)
    else:
        max_length = json.loads((Path(args.bundle) / "manifest.json").read_text())["max_length"]
        Reference(args.model, args.threads, max_length).run(args.method, texts, [0] * len(texts))
    return {"max_rss_mb": max_rss_mb()}


def spawn(args: argparse.Namespace, *extra: str) -> dict:
    cmd = [sys.executable, __file__, args.bundle, args.model, "--n", str(args.n), "--threads", str(args.threads),
           "--repeats", str(args.repeats), *extra] + (["--data", args.data] if args.data else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(extra)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cold_start(args: argparse.Namespace) -> dict:
    ours = ("import time; t = time.perf_counter(); import xai_onnx; xai_onnx.Model(%r, threads=%d); "
            "print(time.perf_counter() - t)" % (args.bundle, args.threads))
    ref = ("import time; t = time.perf_counter(); import torch, captum.attr, transformers; "
           "transformers.AutoModelForSequenceClassification.from_pretrained(%r); print(time.perf_counter() - t)" % args.model)
    res = {}
    for name, code in (("ours", ours), ("captum", ref)):
        times = []
        for _ in range(3):
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
            times.append(float(p.stdout.strip().splitlines()[-1]))
        res[f"{name}_s"] = statistics.median(times)
    return res


def dist_size_mb(names: list[str]) -> float:
    """Installed size of distributions and everything they require, transitively (MB)."""
    seen: set[str] = set()
    todo = list(names)
    total = 0
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for f in dist.files or []:
            try:
                total += f.locate().stat().st_size
            except OSError:
                pass
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            todo.append(req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("~")[0]
                        .split("!")[0].strip())
    return total / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("model", help="the Hugging Face directory the bundle was exported from")
    ap.add_argument("--data", default=None, help="sentences (any format xai-onnx reads); built-in examples if absent")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--methods", default=None, help=f"comma-separated, of {', '.join(METHODS + INT8_METHODS)} (default: "
                    "the first four, and the int8 ones where the bundle has an int8 gradient graph)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", choices=("time", "memory"), default=None)
    ap.add_argument("--method", default=None)
    ap.add_argument("--which", default=None)
    args = ap.parse_args()
    if args.child == "time":
        print(json.dumps(child_time(args)))
        return
    if args.child == "memory":
        print(json.dumps(child_memory(args)))
        return
    if args.methods is None:
        manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
        args.methods = ",".join(METHODS + (INT8_METHODS if manifest.get("gradient_int8") else ()))
    rows = []
    for method in args.methods.split(","):
        row = spawn(args, "--child", "time", "--method", method)
        mem_o = spawn(args, "--child", "memory", "--method", method, "--which", "ours")["max_rss_mb"]
        mem_r = spawn(args, "--child", "memory", "--method", method, "--which", "captum")["max_rss_mb"]
        row.update(ours_max_rss_mb=mem_o, captum_max_rss_mb=mem_r, memory_ratio=mem_o / mem_r)
        rows.append(row)
        print(f"done: {method}", file=sys.stderr)
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "threads": args.threads},
        "versions": {p: metadata.version(p) for p in ("onnxruntime", "torch", "captum", "numpy")
                     if _has(p)},
        "n_sentences": args.n, "methods": rows, "cold_start": cold_start(args),
        "installed_mb": {"runtime (numpy, onnxruntime, tokenizers + deps)": dist_size_mb(["numpy", "onnxruntime", "tokenizers"]),
                         "torch + captum + transformers (+ deps)": dist_size_mb(["torch", "captum", "transformers"])},
    }
    head = (f"{'method':<18}{'latency ours/captum':>22}{'ratio':>7}{'throughput ours/captum':>26}{'ratio':>7}"
            f"{'max diff':>10}{'rank corr':>10}{'RSS MB ours/captum':>22}")
    print(head)
    for r in rows:
        print(f"{r['method']:<18}{r['ours_latency_s']:>10.4f} /{r['captum_latency_s']:>9.4f}{r['latency_ratio']:>8.2f}"
              f"{r['ours_throughput_s']:>13.3f} /{r['captum_throughput_s']:>9.3f}{r['throughput_ratio']:>8.2f}"
              f"{r['max_rel_diff_vs_captum']:>10.1e}{r['rank_correlation_vs_captum_mean']:>10.3f}"
              f"{r['ours_max_rss_mb']:>12.0f} /{r['captum_max_rss_mb']:>6.0f}")
    for r in rows:
        if r["method"].startswith("ig_adaptive"):
            print(f"{r['method']}: {r['mean_steps']:.1f} steps per text (max {r['max_steps']}), worst |delta| "
                  f"{100 * r['max_relative_delta']:.2f} % of |F(x)-F(b)| (Captum at 50 steps "
                  f"{100 * r['captum_max_relative_delta']:.2f} %); scores vs Captum's 50 steps: mean "
                  f"{r['mean_rel_diff_vs_captum']:.1e}, worst {r['max_rel_diff_vs_captum']:.1e} of max |score|")
    cs = report["cold_start"]
    print(f"cold start (import + load): ours {cs['ours_s']:.2f} s, torch+captum {cs['captum_s']:.2f} s")
    for k, v in report["installed_mb"].items():
        print(f"installed: {k}: {v:.0f} MB")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))


def _has(p: str) -> bool:
    try:
        metadata.version(p)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
