"""Runtime: closed-form answers on a handmade linear bundle, the contract every method keeps, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from handmade import LABELS, VOCAB, reference_logits

from xai_onnx import (
    METHODS,
    BundleError,
    FiniteDifference,
    GradientUnavailableError,
    GradientXInput,
    InputError,
    IntegratedGradients,
    Model,
    Occlusion,
    ProviderError,
    Saliency,
    approximation_parameters,
)
from xai_onnx.model import plan_batches
from xai_onnx.quadrature import METHODS as INTEGRATIONS

TEXTS = ["good movie", "the movie was very dull", "not fun", "a very very good fun movie", "bad"]


def ids_of(text: str) -> list[int]:
    return [2] + [VOCAB.index(w) if w in VOCAB else 1 for w in text.split()] + [3]


def linear_contributions(params: dict, text: str, target: int, baseline_id: int = 0) -> np.ndarray:
    """(x_i - b_i) . W[t] / n, the exact attribution of the logit of a mean-pooled linear model."""
    ids = ids_of(text)
    x = params["E"][ids].astype(np.float64)
    b = x.copy()
    b[1:-1] = params["E"][baseline_id]
    return (x - b) @ params["W"][target].astype(np.float64) / len(ids)


# ---- quadrature ----------------------------------------------------------------------------------------------
def test_riemann_rules_by_hand():
    s, a = approximation_parameters("riemann_left", 4)
    np.testing.assert_allclose(a, [0, 0.25, 0.5, 0.75]) and np.testing.assert_allclose(s, [0.25] * 4)
    np.testing.assert_allclose(approximation_parameters("riemann_right", 4)[1], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(approximation_parameters("riemann_middle", 4)[1], [0.125, 0.375, 0.625, 0.875])
    s, a = approximation_parameters("riemann_trapezoid", 3)  # Captum's convention: 1/n steps, halved ends
    np.testing.assert_allclose(s, [1 / 6, 1 / 3, 1 / 6]) and np.testing.assert_allclose(a, [0, 0.5, 1])


def test_gauss_legendre_is_exact_for_polynomials():
    s, a = approximation_parameters("gausslegendre", 2)
    np.testing.assert_allclose(a, [0.5 - 0.5 / np.sqrt(3), 0.5 + 0.5 / np.sqrt(3)])
    for n in (1, 3, 8):
        s, a = approximation_parameters("gausslegendre", n)
        for degree in range(2 * n):
            assert abs((s * a**degree).sum() - 1 / (degree + 1)) < 1e-12


@pytest.mark.parametrize("bad", [("simpson", 10), ("gausslegendre", 0), ("riemann_trapezoid", 1)])
def test_quadrature_rejects(bad):
    with pytest.raises(InputError):
        approximation_parameters(*bad)


# ---- batching -----------------------------------------------------------------------------------------------
def _plan_cost(lengths, plan, call_cost):
    return sum(call_cost + (b - a) * lengths[b - 1] for a, b in plan)


def test_plan_batches_is_optimal_and_respects_the_row_limit():
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        lengths = sorted(int(v) for v in rng.integers(1, 60, n))
        max_rows, call_cost = int(rng.integers(1, 5)), float(rng.choice([0, 5, 20, 100]))
        plan = plan_batches(lengths, max_rows, call_cost)
        assert plan[0][0] == 0 and plan[-1][1] == n and all(p[1] == q[0] for p, q in zip(plan, plan[1:]))
        assert all(0 < b - a <= max_rows for a, b in plan)
        best = min(_plan_cost(lengths, list(zip((0,) + cuts, cuts + (n,))), call_cost)  # every way to cut
                   for k in range(n) for cuts in itertools.combinations(range(1, n), k)
                   if all(b - a <= max_rows for a, b in zip((0,) + cuts, cuts + (n,))))
        assert _plan_cost(lengths, plan, call_cost) == pytest.approx(best)


def test_model_run_follows_the_plan(handmade):
    """Short and long texts explained together go to onnxruntime in separate calls, each padded only to its own
    longest row, and every result is the one the text gets alone."""
    model = Model(handmade[0], threads=1)
    shapes = []
    inner = model._forward

    class Recording:
        def run(self, names, feeds):
            shapes.append(feeds["attention_mask"].shape)
            return inner.run(names, feeds)

    texts = ["good"] * 6 + [" ".join(["very"] * 40 + ["good"])] * 2
    alone = [Occlusion(model).explain([t])[0].scores for t in (texts[0], texts[-1])]
    model._forward = Recording()
    together = Occlusion(model).explain(texts)
    short, long = len(together[0].tokens), len(together[-1].tokens)
    assert sorted({s[1] for s in shapes}) == [short, long]  # never a short row padded to the long length
    assert sum(s[0] for s in shapes if s[1] == short) == 6 * (1 + short)  # each text's row plus one per token
    for r in together:
        np.testing.assert_allclose(r.scores, alone[0] if len(r.tokens) == short else alone[1], rtol=1e-5, atol=1e-7)


def test_plan_batches_keeps_short_rows_away_from_long_ones():
    assert plan_batches([5] * 10 + [90] * 2, 64) == [(0, 10), (10, 12)]
    equal = plan_batches([7] * 130, 64)  # equal lengths: as few calls as the row limit allows
    assert len(equal) == 3 and all(b - a <= 64 for a, b in equal)
    assert plan_batches([], 8) == []
    with pytest.raises(ValueError):
        plan_batches([3, 2], 8)


# ---- closed form -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(handmade):
    return Model(handmade[0], threads=1)


@pytest.fixture(scope="module")
def params(handmade):
    return handmade[1]


def test_predict_matches_numpy(model, params):
    for text, pred in zip(TEXTS, model.predict(TEXTS)):
        ref = reference_logits(params, ids_of(text))
        np.testing.assert_allclose(pred.logits, ref, rtol=1e-5, atol=1e-5)
        assert pred.label == model.labels[int(np.argmax(ref))]
        assert abs(sum(pred.probabilities.values()) - 1) < 1e-9


@pytest.mark.parametrize("integration", INTEGRATIONS)
def test_ig_is_exact_on_a_linear_logit(model, params, integration):
    ig = IntegratedGradients(model, n_steps=3, method=integration, output="logit")
    weight = approximation_parameters(integration, 3)[0].sum()  # 1, except Captum's trapezoid (1 - 1/n)
    for text, r in zip(TEXTS, ig.explain(TEXTS, target=2)):
        exact = linear_contributions(params, text, 2)
        np.testing.assert_allclose(r.scores, weight * exact, atol=1e-5)
        assert abs(r.convergence_delta - (weight - 1) * exact.sum()) < 1e-5


@pytest.mark.parametrize("cls", [Occlusion, FiniteDifference])
def test_perturbation_methods_are_exact_on_a_linear_logit(model, params, cls):
    for text, r in zip(TEXTS, cls(model, output="logit").explain(TEXTS, target="neutral")):
        np.testing.assert_allclose(r.scores, linear_contributions(params, text, 1), atol=1e-5)


@pytest.mark.parametrize("cls", [Occlusion, FiniteDifference])
def test_perturbation_rows_are_shared_by_the_targets_of_a_text(model, params, cls, monkeypatch):
    """With target="all" every class of a text reads F off the same perturbed rows: they are built and run once."""
    rows = []
    real = Model.run

    def counting(self, groups, **kw):
        rows.append(sum(g.embeds.shape[0] for g in groups))
        return real(self, groups, **kw)

    monkeypatch.setattr(Model, "run", counting)
    every = cls(model, output="logit").explain(TEXTS[:2], target="all")
    forward_rows, perturbed = rows[0], sum(rows[1:])
    n_tokens = [len(r.tokens) for r in every[::len(LABELS)]]
    per_text = [n if cls is Occlusion else 2 * (n - 2) for n in n_tokens]  # windows; fd: +/- per non-special token
    assert forward_rows == 2 and perturbed == sum(per_text)  # not len(LABELS) times as many
    for k, r in enumerate(every):
        np.testing.assert_allclose(r.scores, linear_contributions(params, TEXTS[k // len(LABELS)], k % len(LABELS)),
                                   atol=1e-5)


@pytest.mark.parametrize("cls", [IntegratedGradients, Occlusion])
def test_many_targets_are_computed_a_few_at_a_time(model, cls, monkeypatch):
    """The rows a compute call holds stay under chunk_token_rows whatever the number of targets; same results."""
    whole = cls(model, output="logit").explain(TEXTS[:1], target="all")
    n = len(whole[0].tokens)
    calls = []
    real = cls.compute
    monkeypatch.setattr(cls, "compute", lambda self, items: calls.append(len(items)) or real(self, items))
    monkeypatch.setattr(cls, "chunk_token_rows", cls(model).evaluations(n) * n)  # one text's rows
    sliced = cls(model, output="logit").explain(TEXTS[:1], target="all")
    # IG: one target a call; occlusion's targets share one text's rows, so they stay together
    assert calls == ([1] * len(LABELS) if cls is IntegratedGradients else [len(LABELS)])
    for a, b in zip(whole, sliced):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-7)


def test_occlusion_window_averages_over_covering_windows(model, params):
    text = "the movie was very dull"
    contrib = linear_contributions(params, text, 0)
    n = len(contrib)
    expected = np.zeros(n)
    for i in range(n):
        windows = [s for s in range(n - 1) if s <= i <= s + 1]
        expected[i] = np.mean([contrib[s] + contrib[s + 1] for s in windows])
    r = Occlusion(model, window=2, output="logit").explain([text], target=0)[0]
    np.testing.assert_allclose(r.scores, expected, atol=1e-5)


def test_gradient_methods_closed_form(model, params):
    text = "a very very good fun movie"
    ids = ids_of(text)
    n = len(ids)
    w = params["W"][2].astype(np.float64)
    sal = Saliency(model, output="logit").explain([text], target=2)[0]
    np.testing.assert_allclose(sal.scores, np.full(n, np.linalg.norm(w) / n), rtol=1e-5)
    gxi = GradientXInput(model, output="logit").explain([text], target=2)[0]
    np.testing.assert_allclose(gxi.scores, params["E"][ids] @ w / n, atol=1e-5)


def numeric_ig_prob(params, text, target, steps=2000):
    """IG of the softmax probability by a fine midpoint rule in float64, independent of the runtime."""
    ids = ids_of(text)
    x = params["E"][ids].astype(np.float64)
    b = x.copy()
    b[1:-1] = params["E"][0]
    W, c, n = params["W"].astype(np.float64), params["c"].astype(np.float64), len(ids)
    total = np.zeros_like(x)
    for a in (np.arange(steps) + 0.5) / steps:
        z = W @ (b + a * (x - b)).mean(0) + c
        p = np.exp(z - z.max())
        p /= p.sum()
        gz = p[target] * (np.eye(len(p))[target] - p)
        total += (gz @ W)[None] / n
    return ((x - b) * total / steps).sum(-1)


def test_ig_of_probability_matches_numeric_integration(model, params):
    for text in TEXTS[:3]:
        r = IntegratedGradients(model, n_steps=50).explain([text], target=1)[0]
        ref = numeric_ig_prob(params, text, 1)
        assert np.abs(r.scores - ref).max() <= 1e-4 * np.abs(ref).max()
        assert abs(r.convergence_delta) < 1e-5


def test_fd_agrees_with_gradient_times_input_minus_baseline(model):
    for text in TEXTS:
        fd = FiniteDifference(model).explain([text], target=0)[0]
        ig1 = IntegratedGradients(model, n_steps=1, method="riemann_right").explain([text], target=0)[0]  # grad(x).(x-b)
        assert np.abs(fd.scores - ig1.scores).max() <= 1e-2 * np.abs(ig1.scores).max()


def test_adaptive_ig_reports_steps_and_meets_tolerance(model, params):
    r = IntegratedGradients(model, adaptive=True, tolerance=1e-4).explain(TEXTS, target=1)
    for text, a in zip(TEXTS, r):
        gap = abs(a.output_value - a.baseline_value)
        assert a.settings["converged"] and abs(a.convergence_delta) <= 1e-4 * gap + 1e-12
        assert a.settings["integration"] == "adaptive_simpson" and a.settings["steps_used"] >= 5
        if gap > 0:  # per-token scores, not only their sum, agree with a 2000-step float64 integral
            ref = numeric_ig_prob(params, text, 1)
            assert np.abs(a.scores - ref).max() <= 1e-3 * np.abs(ref).max()
    capped = IntegratedGradients(model, adaptive=True, tolerance=1e-12, max_steps=6).explain([TEXTS[1]], target=1)[0]
    assert capped.settings["steps_used"] <= 6 and not capped.settings["converged"]


def test_adaptive_ig_stops_at_once_where_the_integrand_is_constant(model):
    # the logit of the handmade model is linear in the embeddings: Simpson on the first 5 points is exact
    for a in IntegratedGradients(model, adaptive=True, tolerance=1e-6, output="logit").explain(TEXTS, target=0):
        exact = IntegratedGradients(model, n_steps=1, method="riemann_right", output="logit").explain([a.text], target=0)[0]
        assert a.settings["steps_used"] == 5 and a.settings["converged"]
        np.testing.assert_allclose(a.scores, exact.scores, rtol=1e-5, atol=1e-6)


def test_gradient_methods_skip_the_forward_pass_with_the_same_results(model, handmade_without_top, monkeypatch):
    """Saliency and grad x input take the logits from the gradient run; where the bundle's gradient graph can pick
    the arg-max class itself (w_top) even the predicted class needs no forward pass. Old bundles give the same."""
    old = Model(handmade_without_top)
    assert model.gradient_picks_top and not old.gradient_picks_top
    expected = {(cls, str(t), o): cls(old, output=o).explain(TEXTS, target=t)
                for cls in (Saliency, GradientXInput) for t in (None, 2, "all") for o in ("prob", "logit")}
    fresh = Model(model.path)

    def no_forward(*a, **k):
        raise AssertionError("the forward graph ran")

    monkeypatch.setattr(fresh._forward, "run", no_forward)
    for (cls, t, o), want in expected.items():
        got = cls(fresh, output=o).explain(TEXTS, target=None if t == "None" else int(t) if t.isdigit() else t)
        assert [(a.target.index, a.prediction.index) for a in got] == [(a.target.index, a.prediction.index) for a in want]
        for a, b in zip(got, want):
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-7)
            assert abs(a.output_value - b.output_value) < 1e-6
            assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


# ---- the contract every method keeps ---------------------------------------------------------------------------
@pytest.fixture(scope="module", params=sorted(METHODS))
def explainer(request, model):
    cls = METHODS[request.param]
    if any(o.name == "samples" for o in cls.options):  # the model-agnostic methods: per token here, a small budget
        return cls(model, granularity="token", samples=64)
    return cls(model)


def test_shapes_and_fields(explainer):
    for r in explainer.explain(TEXTS):
        assert len(r.scores) == len(r.tokens) == len(r.offsets)
        assert r.tokens[0] == "[CLS]" and r.tokens[-1] == "[SEP]"
        assert np.isfinite(r.scores).all()
        d = r.to_dict()
        assert set(d) >= {"text", "label", "target", "probabilities", "tokens", "offsets", "scores", "convergence_delta"}
        assert (r.convergence_delta is not None) == (r.method in ("ig", "kernel_shap", "partition_shap"))
        for tok, (a, b) in zip(r.tokens[1:-1], r.offsets[1:-1]):
            assert r.text[a:b] == tok or tok == "[UNK]"


def test_batch_of_one_equals_batch_of_many(explainer):
    many = explainer.explain(TEXTS)
    for text, r in zip(TEXTS, many):
        one = explainer.explain([text])[0]
        np.testing.assert_allclose(one.scores, r.scores, rtol=1e-5, atol=1e-7)


def test_deterministic(explainer):
    a, b = explainer.explain(TEXTS), explainer.explain(TEXTS)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.scores, y.scores)


def test_every_target_form(explainer, model):
    text = [TEXTS[3]]
    by_name = explainer.explain(text, target="positive")[0]
    by_index = explainer.explain(text, target=2)[0]
    np.testing.assert_array_equal(by_name.scores, by_index.scores)
    assert by_name.target.label == "positive" and by_name.target.index == 2
    default = explainer.explain(text)[0]
    assert default.target == default.prediction
    every = explainer.explain(TEXTS[:2], target="all")
    assert [(r.text, r.target.index) for r in every] == [(t, k) for t in TEXTS[:2] for k in range(3)]
    np.testing.assert_array_equal(every[2].scores, explainer.explain(TEXTS[:1], target=2)[0].scores)


@pytest.mark.parametrize("target", ["nonsense", 3, -1, 1.5, True])
def test_bad_targets(explainer, target):
    with pytest.raises(InputError):
        explainer.explain(TEXTS, target=target)


def test_empty_and_whitespace_texts_still_explained(explainer):
    res = explainer.explain(["", "   ", "good movie"])
    for r in res[:2]:
        assert r.tokens == ("[CLS]", "[SEP]") and not np.any(r.scores[1:-1]) and r.warnings
    assert len(res[2].tokens) == 4 and not res[2].warnings


def test_long_text_is_truncated_and_says_so(explainer, model):
    long = " ".join(["good"] * 40)
    r, short = explainer.explain([long, "bad"])
    assert r.truncated and len(r.tokens) == model.manifest.max_length and any("truncated" in w for w in r.warnings)
    assert not short.truncated


@pytest.mark.parametrize("texts", ["a single string", [1, 2], ["ok", None]])
def test_texts_must_be_strings(explainer, texts):
    with pytest.raises(InputError):
        explainer.explain(texts)


def test_baselines(model, params):
    text = "good movie"
    for name, bid in (("pad", 0), ("unk", 1), ("mask", 4)):
        r = IntegratedGradients(model, baseline=name, output="logit", n_steps=4).explain([text], target=0)[0]
        np.testing.assert_allclose(r.scores, linear_contributions(params, text, 0, bid), atol=1e-5)
    zero = IntegratedGradients(model, baseline="zero", output="logit", n_steps=4).explain([text], target=0)[0]
    ids = ids_of(text)
    expected = params["E"][ids] @ params["W"][0] / len(ids)
    expected[[0, -1]] = 0
    np.testing.assert_allclose(zero.scores, expected, atol=1e-5)
    # a baseline text fills the non-special positions in order, padding the rest
    bt = IntegratedGradients(model, baseline="bad", output="logit", n_steps=4).explain([text], target=0)[0]
    x = params["E"][ids]
    b = x.copy()
    b[1], b[2] = params["E"][VOCAB.index("bad")], params["E"][0]
    np.testing.assert_allclose(bt.scores, (x - b) @ params["W"][0] / len(ids), atol=1e-5)


def test_bad_options(model):
    for make in (lambda: Occlusion(model, window=0), lambda: FiniteDifference(model, epsilon=0),
                 lambda: IntegratedGradients(model, method="simpson"), lambda: Saliency(model, output="softmax"),
                 lambda: IntegratedGradients(model, n_steps=0), lambda: IntegratedGradients(model, adaptive=True, max_steps=4),
                 lambda: Model(model.path, batch_size=0)):
        with pytest.raises(InputError):
            make()


# ---- bundles -------------------------------------------------------------------------------------------------
def test_forward_only_bundle(handmade_forward_only, params):
    m = Model(handmade_forward_only)
    assert not m.has_gradient
    for cls in (IntegratedGradients, Saliency, GradientXInput):
        with pytest.raises(GradientUnavailableError, match="re-export"):
            cls(m)
    text = "the movie was very dull"
    for cls in (Occlusion, FiniteDifference):
        r = cls(m, output="logit").explain([text], target=0)[0]
        np.testing.assert_allclose(r.scores, linear_contributions(params, text, 0), atol=1e-5)


def test_corrupt_and_missing_bundles(tmp_path, handmade):
    import shutil

    with pytest.raises(BundleError, match="not found"):
        Model(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="manifest.json"):
        Model(tmp_path / "empty")
    for name, content in (("forward.onnx", b"not an onnx file"), ("manifest.json", b"{ broken"),
                          ("embeddings.npy", b"garbage"), ("tokenizer.json", b"[]")):
        d = tmp_path / name.replace(".", "_")
        shutil.copytree(handmade[0], d)
        (d / name).write_bytes(content)
        with pytest.raises(BundleError):
            Model(d)
    d = tmp_path / "missing"
    shutil.copytree(handmade[0], d)
    (d / "embeddings.npy").unlink()
    with pytest.raises(BundleError, match="missing"):
        Model(d)


def test_unavailable_provider_is_an_error(handmade):
    with pytest.raises(ProviderError, match="onnxruntime-gpu"):
        Model(handmade[0], providers=["CUDAExecutionProvider"] if "CUDAExecutionProvider" not in
              __import__("onnxruntime").get_available_providers() else ["NoSuchExecutionProvider"])


def test_cuda_runs_without_tf32_unless_asked(monkeypatch):
    from xai_onnx import session

    monkeypatch.setattr(session.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session.resolve_providers(["CUDAExecutionProvider"]) == [
        ("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    mine = ("CUDAExecutionProvider", {"use_tf32": "1", "device_id": "0"})
    assert session.resolve_providers([mine])[0] == mine
    assert session.resolve_providers(None) == ["CPUExecutionProvider"]


def test_v1_manifest_still_loads_as_text_classification(handmade, tmp_path):
    """Bundles written before manifest v2 (no task, no axes, schema_version 1) load as sequence classifiers."""
    import shutil

    src, _ = handmade
    old = tmp_path / "v1"
    shutil.copytree(src, old)
    data = json.loads((old / "manifest.json").read_text())
    data["schema_version"] = 1
    for key in ("task", "pooling", "normalize"):
        data.pop(key, None)
    for graph in ("forward", "gradient", "gradient_int8"):
        if data.get(graph):
            data[graph].pop("axes", None)
    (old / "manifest.json").write_text(json.dumps(data))
    v1, v2 = Model(old), Model(src)
    assert v1.manifest.task == "sequence-classification" and v1.manifest.schema_version == 1
    assert v1.manifest.forward.axes_of("logits") == ["batch", "labels"]
    a = IntegratedGradients(v1, n_steps=8).explain(TEXTS)
    b = IntegratedGradients(v2, n_steps=8).explain(TEXTS)
    assert all(np.array_equal(x.scores, y.scores) for x, y in zip(a, b))
    data["schema_version"] = 3
    (old / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="schema version"):
        Model(old)
