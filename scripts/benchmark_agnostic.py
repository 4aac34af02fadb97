"""Model-agnostic explainers against shap and lime on the same model, texts, budgets and threads.

    python scripts/benchmark_agnostic.py BUNDLE HF_MODEL_DIR --data FILE [--n-speed 10] [--n-exact 10]
        [--threads 1] [--parts 1,2,3] [--out FILE.json]

Three parts, one run (shap, lime, torch and transformers are benchmark-only dependencies):

1. **Speed and agreement** on the first ``--n-speed`` sentences: our ``partition_shap`` (500 evaluations) against
   shap's Partition explainer (Text masker, ``max_evals=500``), our ``lime`` (1,000 samples) against lime's
   ``LimeTextExplainer`` (1,000 samples), and our ``kernel_shap`` (1,000 evaluations) for reference; CPU time per
   text (``time.process_time``, one text a call as the peers work, and ours over all texts in one call), torch and
   onnxruntime on ``--threads`` threads. Masking is the same on both sides: shap's masker puts ``[MASK]`` in place of
   each masked token (collapse off) and ours uses ``baseline="mask"`` per token; lime removes a masked word
   (``bow=False``, ``mask_string=""``) and ours uses ``baseline="delete"`` per word. Agreement is Spearman's rank
   correlation over words (token scores summed into words on both sides; lime's words matched to ours by position).
   Where the bundle has an int8 forward graph (exported with ``--int8``), ours ``partition_shap`` runs on it too.
   The ratio at equal evaluations is taken over the texts where both sides ran the whole budget. Then the cost of
   one forward row (the longest text, 48 rows with random tokens masked, the same ids on every side): onnxruntime
   float32 and int8 through our batch planner, torch (transformers) called directly, float32 and dynamically
   quantised to int8 (``torch.ao.quantization.quantize_dynamic`` on every Linear).
2. **KernelSHAP accuracy** on the first ``--n-exact`` sentences with 10 to 12 words: every coalition evaluated once
   (our forward graph, pad masking), the exact Shapley values from them, then ours (``kernel_design`` +
   ``solve_efficient``, exactly what ``KernelShap`` runs) and shap's ``KernelExplainer`` on that same table of
   values, five seeds each: mean absolute error (and relative L2 error) at 512 evaluations, and ours over a budget
   sweep to find the evaluations we need to reach shap's error at 512.
3. With ``--n-faith N``: faithfulness (``FaithfulnessEvaluator``, deletion, probability of the predicted class) of
   IG, occlusion and the three methods at their default budgets, at word and at token level, on the first N texts;
   then the int8 forward graph (a bundle exported with ``--int8``) against float32 on the same texts: label
   agreement, probability differences, Spearman between the two precisions' word scores (occlusion, partition_shap)
   and CPU seconds per text of each.
4. The machine (lscpu model name), versions, settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
import types
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SEEDS = (0, 1, 2, 3, 4)
SWEEP = (128, 192, 256, 320, 384, 448, 512, 640, 768, 1024, 1536, 2048)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from xai_onnx.evaluation import spearman as sp

    return sp(np.asarray(a), np.asarray(b)) if len(a) > 2 else float("nan")


# ---- the torch peer ------------------------------------------------------------------------------------------------
class TorchModel:
    def __init__(self, hf_dir: str, threads: int):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
        self.calls = 0
        self.rows = 0

    def __call__(self, texts: Any) -> np.ndarray:
        """Class probabilities (n, labels) of a list of strings, 64 at a time."""
        texts = [str(t) for t in texts]
        self.calls += 1
        self.rows += len(texts)
        out = []
        with self.torch.no_grad():
            for i in range(0, len(texts), 64):
                enc = self.tokenizer(texts[i:i + 64], padding=True, truncation=True, return_tensors="pt")
                out.append(self.torch.softmax(self.model(**enc).logits, -1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.num_labels))


# ---- part 1: speed and agreement ------------------------------------------------------------------------------------
def speed_and_agreement(bundle: str, hf_dir: str, texts: list[str], threads: int) -> dict[str, Any]:
    import shap
    from lime.lime_text import LimeTextExplainer

    from xai_onnx import Model
    from xai_onnx.methods import KernelShap, Lime, PartitionShap
    from xai_onnx.perturbation import word_groups

    model = Model(bundle, threads=threads)
    peer = TorchModel(hf_dir, threads)
    labels = list(model.labels)
    ours = {
        "partition_shap": PartitionShap(model, samples=500, granularity="token", baseline="mask"),
        "lime": Lime(model, samples=1000, baseline="delete"),
        "kernel_shap": KernelShap(model, samples=1000, baseline="mask"),
    }
    if model.manifest.forward_int8 is not None:  # the same method on the int8 forward graph (--precision int8)
        ours["partition_shap_int8"] = PartitionShap(Model(bundle, threads=threads, precision="int8"), samples=500,
                                                    granularity="token", baseline="mask")
    for ex in ours.values():  # warm up the session and the caches outside the timings
        ex.explain(texts[:1])
    masker = shap.maskers.Text(peer.tokenizer, mask_token=peer.tokenizer.mask_token, collapse_mask_token=False)
    shap_partition = shap.Explainer(peer, masker, output_names=labels)
    lime = LimeTextExplainer(class_names=labels, bow=False, mask_string="", random_state=0)
    peer(texts[:1])

    res: dict[str, Any] = {"per_text": []}
    times: dict[str, list[float]] = {k: [] for k in (*ours, "shap_partition", "lime_peer")}
    for text in texts:
        row: dict[str, Any] = {"text": text}
        out = {}
        for name, ex in ours.items():
            t0 = time.process_time()
            out[name] = ex.explain([text])[0]
            times[name].append(time.process_time() - t0)
        target = out["lime"].target.index
        enc = model.encode([text])[0]
        groups = word_groups(enc)
        # shap Partition: token values (special tokens included, as the masker's features)
        peer.rows = 0
        t0 = time.process_time()
        sv = shap_partition([text], max_evals=500, silent=True)
        times["shap_partition"].append(time.process_time() - t0)
        row["shap_partition_rows"] = peer.rows
        row["partition_shap_evaluations"] = out["partition_shap"].settings.get("evaluations")
        if "partition_shap_int8" in out:
            row["partition_shap_int8_evaluations"] = out["partition_shap_int8"].settings.get("evaluations")
        shap_tokens = np.asarray(sv.values[0])[:, target]
        ours_tokens = out["partition_shap"].scores
        if shap_tokens.shape[0] == ours_tokens.shape[0]:
            w_shap = np.array([shap_tokens[g].sum() for g in groups])
            w_ours = np.array([ours_tokens[g].sum() for g in groups])
            row["spearman_partition_words"] = spearman(w_ours, w_shap)
            row["spearman_partition_tokens"] = spearman(ours_tokens[~enc.special], shap_tokens[~enc.special])
        else:
            row["spearman_partition_words"] = None  # shap tokenised the text differently: not comparable
        # lime: words by its own regex; matched to ours by the word that holds their first character
        peer.rows = 0
        t0 = time.process_time()
        exp = lime.explain_instance(text, peer, num_features=10_000, num_samples=1000, labels=(target,))
        times["lime_peer"].append(time.process_time() - t0)
        row["lime_peer_rows"] = peer.rows
        ours_words = out["lime"]
        pairs = []
        for idx, weight in exp.as_map()[target]:
            start = int(exp.domain_mapper.indexed_string.string_position(idx)[0])
            k = next((k for k, (a, b) in enumerate(ours_words.offsets) if a <= start < b), None)
            if k is not None:
                pairs.append((ours_words.scores[k], weight))
        if pairs:
            a, b = np.array(pairs).T
            row["spearman_lime_words"] = spearman(a, b)
            row["lime_matched_words"] = len(pairs)
        row["lime_r2_ours"] = ours_words.settings["local_fit_r2"]
        row["lime_r2_peer"] = float(exp.score[target]) if isinstance(exp.score, dict) else float(exp.score)
        row["words"] = len(groups)
        row["cpu_s"] = {k: v[-1] for k, v in times.items()}
        res["per_text"].append(row)
        print(f"  {len(groups):>2} words  " + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), flush=True)
    # ours over all texts in one call (rows of different texts share onnxruntime calls)
    batched = {}
    for name, ex in ours.items():
        t0 = time.process_time()
        ex.explain(texts)
        batched[name] = (time.process_time() - t0) / len(texts)
    mean = {k: float(np.mean(v)) for k, v in times.items()}

    def avg(key: str) -> float | None:
        vals = [r[key] for r in res["per_text"] if r.get(key) is not None and not np.isnan(r[key])]
        return float(np.mean(vals)) if vals else None

    res["cpu_s_per_text"] = mean
    res["cpu_s_per_text_ours_batched"] = batched
    res["ratios"] = {
        "partition_shap / shap Partition": mean["partition_shap"] / mean["shap_partition"],
        "lime / lime": mean["lime"] / mean["lime_peer"],
        "partition_shap batched / shap Partition": batched["partition_shap"] / mean["shap_partition"],
        "lime batched / lime": batched["lime"] / mean["lime_peer"],
    }
    res["partition_at_equal_evaluations"] = equal_evaluations(res["per_text"], 500)
    if "partition_shap_int8" in ours:
        res["ratios"]["partition_shap int8 / shap Partition"] = mean["partition_shap_int8"] / mean["shap_partition"]
    longest = max(texts, key=lambda t: len(model.encode([t])[0]))
    res["row_cost"] = row_cost(model, peer, longest, threads)
    res["spearman_mean"] = {"partition_words": avg("spearman_partition_words"),
                            "partition_tokens": avg("spearman_partition_tokens"), "lime_words": avg("spearman_lime_words")}
    res["lime_r2_mean"] = {"ours": avg("lime_r2_ours"), "peer": avg("lime_r2_peer")}
    res["settings"] = {"partition": "500 evaluations, token features, [MASK] per masked token (shap: Text masker, "
                                    "collapse_mask_token=False, max_evals=500)",
                       "lime": "1000 samples, word features, masked words deleted (lime: bow=False, mask_string='', "
                               "num_samples=1000, all features)",
                       "kernel_shap": "1000 evaluations, word features, [MASK]", "threads": threads,
                       "target": "predicted class, probability"}
    return res


def equal_evaluations(per_text: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """Partition SHAP at equal evaluations: the texts where both sides ran the whole budget (short texts need fewer:
    ours stops at the exact Owen values, shap at its own count; ours stops one short where the next expansion's two
    rows do not fit), CPU time summed over them, ours / shap's."""
    out: dict[str, Any] = {}
    for name, key in (("partition_shap", ""), ("partition_shap_int8", "_int8")):
        full = [i for i, r in enumerate(per_text) if name in r["cpu_s"] and r["shap_partition_rows"] >= budget
                and (r.get(f"{name}_evaluations") or 0) >= budget - 1]
        out[f"n_texts{key}"], out[f"texts{key}"] = len(full), [i + 1 for i in full]
        if full:
            out[f"ratio{key}"] = float(sum(per_text[i]["cpu_s"][name] for i in full) /
                                       sum(per_text[i]["cpu_s"]["shap_partition"] for i in full))
    return out


def row_cost(model: Any, peer: TorchModel, text: str, threads: int, n_rows: int = 48) -> dict[str, Any]:
    """CPU ms per forward row of one text with random tokens replaced by [MASK] (Partition SHAP's rows), the same
    token ids on every side: onnxruntime float32 and int8 through ``Model.run`` (our batch planner), torch in one
    call of ``n_rows`` and in calls of 16 (the better is kept: shap calls the model with batches of varied size)."""
    from xai_onnx import Model
    from xai_onnx.model import RowGroup

    enc = model.encode([text])[0]
    rng = np.random.default_rng(0)
    ids = np.tile(enc.ids, (n_rows, 1))
    inner = np.flatnonzero(~enc.special)
    for r in range(n_rows):
        ids[r, rng.choice(inner, size=rng.integers(0, len(inner) + 1), replace=False)] = model.special_id("mask")
    types = np.asarray(enc.type_ids, dtype=np.int64)

    def best_of(fn: Any, repeats: int = 3) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return min(times) / n_rows * 1e3

    out: dict[str, Any] = {"tokens": int(len(enc.ids)), "rows": n_rows}
    models = {"onnxruntime_float32": model}
    if model.manifest.forward_int8 is not None:
        models["onnxruntime_int8"] = Model(model.path, threads=threads, precision="int8")
    for tag, m in models.items():
        group = RowGroup(m.embed(ids), types)
        out[tag + "_ms"] = best_of(lambda m=m, group=group: m.run([group]))
    torch = peer.torch
    t_ids, t_types = torch.as_tensor(ids), torch.as_tensor(np.tile(types, (n_rows, 1)))
    t_mask = torch.ones_like(t_ids)

    def torch_rows(net: Any, step: int) -> None:
        with torch.no_grad():
            for i in range(0, n_rows, step):
                net(input_ids=t_ids[i:i + step], attention_mask=t_mask[i:i + step], token_type_ids=t_types[i:i + step])

    out["torch_ms"] = min(best_of(lambda: torch_rows(peer.model, n_rows)), best_of(lambda: torch_rows(peer.model, 16)))
    # the same precision as our int8 graph: torch's dynamic quantisation of every Linear (int8 weights, activations
    # quantised per call), what a shap user would reach for
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(peer.model), {torch.nn.Linear}, dtype=torch.qint8)
    out["torch_qint8_ms"] = min(best_of(lambda: torch_rows(q8, n_rows)), best_of(lambda: torch_rows(q8, 16)))
    return out


# ---- part 2: KernelSHAP accuracy against the exact Shapley values ----------------------------------------------------
def kernel_accuracy(bundle: str, texts: list[str], n: int, threads: int) -> dict[str, Any]:
    import shap

    from xai_onnx import Model
    from xai_onnx.methods import KernelShap
    from xai_onnx.methods.agnostic import item_rng
    from xai_onnx.methods.kernel_shap import all_masks, exact_shapley, kernel_design, solve_efficient
    from xai_onnx.perturbation import Perturber, features_of

    model = Model(bundle, threads=threads)
    perturber = Perturber(model, "pad")
    chosen = []
    for text in texts:
        enc = model.encode([text])[0]
        feats = features_of(enc, "word")
        if 10 <= len(feats) <= 12:
            chosen.append((text, enc, feats))
        if len(chosen) == n:
            break
    ours_err: dict[int, list[float]] = {b: [] for b in SWEEP}
    ours_rel: dict[int, list[float]] = {b: [] for b in SWEEP}
    shap_err: dict[str, list[float]] = {"l1_reg=False": [], "default (num_features(10))": []}
    shap_rel: dict[str, list[float]] = {k: [] for k in shap_err}
    sanity = []
    t0 = time.perf_counter()
    for text, enc, feats in chosen:
        M = len(feats)
        probs = model.predict([text])[0].probabilities
        target = list(model.labels).index(max(probs, key=probs.__getitem__))
        masks = all_masks(M)
        out = perturber.outputs([(feats, masks)])[0]
        assert out is not None
        logits = out["logits"].astype(np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        table = (p / p.sum(1, keepdims=True))[:, target]  # F of every coalition, bit pattern k -> row k
        exact = exact_shapley(table, M)
        f0, fx = float(table[0]), float(table[-1])
        bits = 1 << np.arange(M)

        def err(phi: np.ndarray) -> tuple[float, float]:
            return float(np.abs(phi - exact).mean()), float(np.linalg.norm(phi - exact) / np.linalg.norm(exact))

        def ours_at(budget: int, rng: np.random.Generator) -> np.ndarray:
            design, w = kernel_design(M, budget - 1, rng)
            return solve_efficient(design, w, table[design.astype(np.int64) @ bits] - f0, fx - f0)

        for budget in SWEEP:
            for seed in SEEDS:
                e, r = err(ours_at(budget, np.random.default_rng([seed, M, budget])))
                ours_err[budget].append(e)
                ours_rel[budget].append(r)
        # the explainer itself, on the model, at 512: the same numbers as the table
        real = KernelShap(model, samples=512, baseline="pad").explain([text], target=target)[0]
        item = types.SimpleNamespace(encoded=enc, target=target)
        sanity.append(float(np.abs(real.scores - ours_at(512, item_rng(0, item))).max()))  # type: ignore[arg-type]

        def game(z: np.ndarray) -> np.ndarray:
            return table[np.asarray(z, dtype=np.int64) @ bits]

        explainer = shap.KernelExplainer(game, np.zeros((1, M)))
        for seed in SEEDS:
            for key, l1 in (("l1_reg=False", False), ("default (num_features(10))", "num_features(10)")):
                np.random.seed(seed)
                phi = np.asarray(explainer.shap_values(np.ones((1, M)), nsamples=512, l1_reg=l1, silent=True))
                e, r = err(phi.reshape(-1)[:M])
                shap_err[key].append(e)
                shap_rel[key].append(r)
        print(f"  {M} words: ours@512 {np.mean(ours_err[512][-len(SEEDS):]):.2e}  "
              f"shap@512 {np.mean(shap_err['l1_reg=False'][-len(SEEDS):]):.2e}", flush=True)
    target_err = float(np.mean(shap_err["l1_reg=False"]))
    reach = next((b for b in SWEEP if np.mean(ours_err[b]) <= target_err), None)
    return {
        "n_texts": len(chosen), "words": [len(f) for _, _, f in chosen], "seeds": list(SEEDS), "masking": "pad",
        "mean_abs_error": {"ours": {b: float(np.mean(v)) for b, v in ours_err.items()},
                           "shap_kernel_at_512": {k: float(np.mean(v)) for k, v in shap_err.items()}},
        "relative_l2_error": {"ours": {b: float(np.mean(v)) for b, v in ours_rel.items()},
                              "shap_kernel_at_512": {k: float(np.mean(v)) for k, v in shap_rel.items()}},
        "ours_evaluations_to_reach_shap_l1_false_at_512": reach,
        "explainer_vs_table_max_abs_diff": float(max(sanity)) if sanity else None,
        "seconds": time.perf_counter() - t0,
    }


# ---- part 3: faithfulness, word and token level --------------------------------------------------------------------
def faithfulness(bundle: str, texts: list[str], threads: int) -> dict[str, Any]:
    from xai_onnx import Model
    from xai_onnx.evaluation import FaithfulnessEvaluator
    from xai_onnx.methods import IntegratedGradients, KernelShap, Lime, Occlusion, PartitionShap

    model = Model(bundle, threads=threads)
    out = {}
    for granularity in ("word", "token"):
        explainers = {"ig": IntegratedGradients(model), "occlusion": Occlusion(model),
                      "lime": Lime(model, granularity=granularity),
                      "kernel_shap": KernelShap(model, granularity=granularity),
                      "partition_shap": PartitionShap(model, granularity=granularity)}
        report = FaithfulnessEvaluator(model, granularity=granularity).evaluate(texts, explainers)
        print(report.table(), flush=True)
        out[granularity] = report.to_dict()
    return out


# ---- part 4: the int8 forward graph against float32, on real text --------------------------------------------------
def int8_fidelity(bundle: str, texts: list[str], threads: int) -> dict[str, Any]:
    """Predictions and word rankings of the forward-only methods on the int8 forward graph against float32, on the
    same texts; CPU seconds per text of each."""
    from xai_onnx import Model
    from xai_onnx.methods import Occlusion, PartitionShap

    f32, i8 = Model(bundle, threads=threads), Model(bundle, threads=threads, precision="int8")
    if f32.manifest.forward_int8 is None:
        return {"skipped": "the bundle has no int8 forward graph: export it with --int8"}
    p32, p8 = f32.predict(texts), i8.predict(texts)
    agree = float(np.mean([a.label == b.label for a, b in zip(p32, p8)]))
    dprob = [abs(a.probabilities[a.label] - b.probabilities[a.label]) for a, b in zip(p32, p8)]
    out: dict[str, Any] = {"n_texts": len(texts), "label_agreement": agree, "mean_abs_probability_difference":
                           float(np.mean(dprob)), "max_abs_probability_difference": float(np.max(dprob)), "methods": {}}
    for name, make in (("occlusion", lambda m: Occlusion(m, granularity="word")),
                       ("partition_shap", lambda m: PartitionShap(m, samples=500, random_state=0))):
        runs = {}
        for tag, model in (("float32", f32), ("int8", i8)):
            t0 = time.process_time()
            runs[tag] = make(model).explain(texts)
            runs[tag + "_cpu_s_per_text"] = (time.process_time() - t0) / len(texts)
        rho = [spearman(np.asarray(a.scores), np.asarray(b.scores)) for a, b in zip(runs["float32"], runs["int8"])
               if len(a.scores) > 1]
        out["methods"][name] = {"spearman_mean": float(np.nanmean(rho)), "spearman_min": float(np.nanmin(rho)),
                                "cpu_s_per_text_float32": runs["float32_cpu_s_per_text"],
                                "cpu_s_per_text_int8": runs["int8_cpu_s_per_text"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("hf_dir")
    ap.add_argument("--data", required=True)
    ap.add_argument("--n-speed", type=int, default=10)
    ap.add_argument("--n-exact", type=int, default=10)
    ap.add_argument("--n-faith", type=int, default=0, help="texts for the faithfulness tables (0: skip)")
    ap.add_argument("--faith-threads", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parts", default="1,2,3", help="which parts to run (3 includes the int8 part 4)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",")}
    from xai_onnx.io import read_labelled

    texts = [t for t, _ in read_labelled(args.data)]
    result: dict[str, Any] = {"machine": {"cpu": cpu_model(), "python": platform.python_version()},
                              "versions": {p: metadata.version(p) for p in ("onnxruntime", "torch", "transformers",
                                                                            "shap", "lime", "numpy")},
                              "data": args.data}
    if args.out and Path(args.out).is_file():  # a run of some parts keeps the other parts' results
        previous = json.loads(Path(args.out).read_text(encoding="utf-8"))
        result = {**previous, **result, "settings_of_earlier_parts": previous.get("settings")}

    def save() -> None:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    result["settings"] = {"n_speed": args.n_speed, "n_exact": args.n_exact, "n_faith": args.n_faith,
                          "threads": args.threads, "faith_threads": args.faith_threads}
    if "2" in parts:
        print("part 2: KernelSHAP against exact Shapley values", flush=True)
        result["kernel_accuracy"] = kernel_accuracy(args.bundle, texts, args.n_exact, args.threads)
        ka = result["kernel_accuracy"]
        print(json.dumps({k: ka[k] for k in ("mean_abs_error", "ours_evaluations_to_reach_shap_l1_false_at_512",
                                             "explainer_vs_table_max_abs_diff")}, indent=1), flush=True)
        save()
    if "1" in parts:
        print("part 1: speed and agreement", flush=True)
        result["speed"] = speed_and_agreement(args.bundle, args.hf_dir, texts[:args.n_speed], args.threads)
        print(json.dumps({k: result["speed"][k] for k in ("cpu_s_per_text", "cpu_s_per_text_ours_batched", "ratios",
                                                          "partition_at_equal_evaluations", "row_cost",
                                                          "spearman_mean", "lime_r2_mean")}, indent=1), flush=True)
        save()
    if args.n_faith and "3" in parts:
        print("part 3: faithfulness", flush=True)
        result["faithfulness"] = faithfulness(args.bundle, texts[:args.n_faith], args.faith_threads)
        save()
        print("part 4: int8 forward graph against float32", flush=True)
        result["int8_forward"] = int8_fidelity(args.bundle, texts[:args.n_faith], args.threads)
        print(json.dumps(result["int8_forward"], indent=1), flush=True)
        save()


if __name__ == "__main__":
    main()
