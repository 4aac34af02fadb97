"""Measurements for the example-based methods on minilm-sst2 (issue: adversarial, influence, prototypes).

1. Attacks on the first 200 SST-2 test sentences: success rate, mean flips per success, queries per success,
   seconds per sentence, for HotFlip and the forward-only greedy attack.
2. Self-influence: flip 10 % of the labels of 2,000 SST-2 train sentences, fit, and count the flipped labels found
   in the top 10 % of the self-influence ranking (random finds 10 %).
3. MMD-critic on all 6,920 train sentences, 20 prototypes and 10 criticisms per class: seconds after encoding.

Usage: python scripts/examples_sst2.py BUNDLE [--shared ../shared] [--n-attack 200] [--out scripts/results/examples_sst2.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from xai_onnx import Model
from xai_onnx.adversarial import GreedySubstitution, HotFlip
from xai_onnx.influence import InfluenceIndex
from xai_onnx.io import read_labelled
from xai_onnx.prototypes import MMDCritic


def attack_table(model: Model, texts: list[str]) -> list[dict]:
    rows = []
    for name, attacker in (("hotflip", HotFlip(model, max_flips=3)), ("greedy", GreedySubstitution(model, max_flips=3))):
        t0 = time.perf_counter()
        res = attacker.attack(texts)
        secs = time.perf_counter() - t0
        ok = [r for r in res if r.success]
        rows.append({"attack": name, "n": len(res), "success_rate": len(ok) / len(res),
                     "flips_per_success": float(np.mean([len(r.flips) for r in ok])) if ok else None,
                     "queries_per_success": float(np.mean([r.queries for r in ok])) if ok else None,
                     "seconds_per_sentence": secs / len(res)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--n-attack", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "examples_sst2.json"))
    args = ap.parse_args()
    data = Path(args.shared) / "data" / "sst2"
    model = Model(args.bundle, threads=args.threads)
    test = read_labelled(data / "stsa.binary.test")
    train = read_labelled(data / "stsa.binary.train")
    out: dict = {"machine": "2-core Sapphire Rapids, 2 onnxruntime threads"}

    out["attacks"] = attack_table(model, [t for t, _ in test[:args.n_attack]])
    print(f"{'attack':<9}{'success':>9}{'flips/succ':>12}{'queries/succ':>14}{'s/sentence':>12}")
    for r in out["attacks"]:
        print(f"{r['attack']:<9}{r['success_rate']:>9.3f}{r['flips_per_success'] or 0:>12.2f}"
              f"{r['queries_per_success'] or 0:>14.1f}{r['seconds_per_sentence']:>12.3f}")

    rng = np.random.default_rng(0)
    sub = train[:2000]
    labels = np.array([int(lab) for _, lab in sub])
    flipped = rng.choice(len(sub), size=len(sub) // 10, replace=False)
    noisy = labels.copy()
    noisy[flipped] = 1 - noisy[flipped]
    index = InfluenceIndex(model).fit([t for t, _ in sub], [str(v) for v in noisy])
    top = np.argsort(-index.self_influence())[:len(sub) // 10]
    found = len(set(top.tolist()) & set(flipped.tolist())) / len(flipped)
    out["self_influence"] = {"n": len(sub), "flipped": len(flipped), "found_in_top_10pct": found, "random": 0.10}
    print(f"self-influence: {found:.3f} of the flipped labels in the top 10 % (random 0.10)")

    t0 = time.perf_counter()
    feats = model.features([t for t, _ in train])
    enc_s = time.perf_counter() - t0
    y = np.array([int(lab) for _, lab in train])
    t0 = time.perf_counter()
    critic = MMDCritic(n_prototypes=20, n_criticisms=10, per_class=True).fit(feats, y, model.labels)
    mmd_s = time.perf_counter() - t0
    out["prototypes"] = {"n": len(train), "encode_seconds": enc_s, "mmd_critic_seconds": mmd_s,
                         "groups": [{"label": g.label, "n_prototypes": len(g.prototypes), "n_criticisms": len(g.criticisms)}
                                    for g in critic.groups_]}
    print(f"MMD-critic on {len(train)} sentences (20 prototypes + 10 criticisms per class): {mmd_s:.1f} s "
          f"after {enc_s:.1f} s of encoding")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
