"""``xai-onnx import``: optimum exports of tiny random models imported without torch, checked against torch autograd
and Captum; quantised models forward-only; unsupported operators refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from blocking import blocker

onnx = pytest.importorskip("onnx", reason="the import extra (onnx) is not installed")

from xai_onnx_exporters.errors import ExportInputError  # noqa: E402
from xai_onnx_exporters.onnx_import import UnsupportedOperatorError, import_bundle  # noqa: E402
from xai_onnx_exporters.onnx_import.autodiff import gradient_model  # noqa: E402

from xai_onnx import IntegratedGradients, Model, Occlusion, Saliency  # noqa: E402
from xai_onnx.errors import GradientUnavailableError  # noqa: E402

TEXTS = ["good movie", "not fun at all , the plot was boring", "i love it but the acting is awful"]
FAST = ("bert",)
SLOW = ("distilbert", "roberta", "xlm-roberta", "electra", "albert", "mpnet", "deberta-v2")


def _build_deberta(d: Path) -> Path:
    import torch
    import transformers as tf
    from tiny_models import LABELS, MAX_POS, save_with_scaled_head

    torch.manual_seed(0)
    d.mkdir(parents=True, exist_ok=True)
    cfg = tf.DebertaV2Config(vocab_size=80, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=36,
                             max_position_embeddings=MAX_POS, num_labels=3, id2label=LABELS,
                             label2id={v: k for k, v in LABELS.items()}, relative_attention=True, pos_att_type=["p2c", "c2p"],
                             position_buckets=8, max_relative_positions=16, pooler_hidden_size=24, type_vocab_size=0)
    return save_with_scaled_head(tf.DebertaV2ForSequenceClassification(cfg).eval(), d)


_SOURCES: dict[tuple[str, str], Path] = {}
# optimum's task for each kind of tiny model
OPTIMUM_TASKS = {"seq": "text-classification", "token": "token-classification", "similarity": "feature-extraction",
                 "st": "feature-extraction"}


@pytest.fixture(scope="session")
def optimum_dir(tmp_path_factory):
    """One optimum export per architecture and kind per session: ``optimum_dir(arch, kind) -> (hf source dir, onnx
    dir)``. kind: "seq" (3-label sequence classifier), "token" (token classifier, TOKEN_LABELS), "similarity" (a
    sentence-transformers BERT encoder, mean pooling and Normalize, exported as plain transformers feature extraction,
    its modules.json and 1_Pooling copied next to the ONNX as a user would), "st" (the same layout with CLS pooling,
    exported by optimum as sentence-transformers: outputs token_embeddings and its own sentence_embedding)."""
    pytest.importorskip("torch", reason="building the tiny models needs torch (tests only; the import never does)")
    pytest.importorskip("optimum.exporters.onnx", reason="optimum exports the ONNX models under test")
    root = tmp_path_factory.mktemp("optimum")

    def get(arch: str, kind: str = "seq") -> tuple[Path, Path]:
        name = arch if kind == "seq" else f"{arch}-{kind}"
        if (arch, kind) not in _SOURCES:
            import shutil

            from optimum.exporters.onnx import main_export
            from tiny_models import TOKEN_LABELS, build_classifier, build_sentence_encoder

            src = root / f"{name}-src"
            extra = {}
            if kind in ("similarity", "st"):
                assert arch == "bert", "the tiny sentence encoder is a BERT"
                build_sentence_encoder(src, normalize=True, pooling="mean" if kind == "similarity" else "cls")
                extra = {"library_name": "transformers" if kind == "similarity" else "sentence_transformers"}
            elif arch == "deberta-v2":
                _build_deberta(src)
            elif kind == "token":
                build_classifier(arch, src, labels=TOKEN_LABELS, head="TokenClassification")
            else:
                build_classifier(arch, src)
            out = root / f"{name}-onnx"
            main_export(model_name_or_path=str(src), output=str(out), task=OPTIMUM_TASKS[kind], **extra)
            if kind == "similarity":
                for f in ("modules.json", "sentence_bert_config.json"):
                    shutil.copy(src / f, out / f)
                shutil.copytree(src / "1_Pooling", out / "1_Pooling")
            _SOURCES[arch, kind] = src
        return _SOURCES[arch, kind], root / f"{name}-onnx"

    return get


_BUNDLES: dict[tuple[str, str], Path] = {}


@pytest.fixture(scope="session")
def imported(optimum_dir, tmp_path_factory):
    def get(arch: str, kind: str = "seq") -> tuple[Path, Path]:
        src, onnx_dir = optimum_dir(arch, kind)
        if (arch, kind) not in _BUNDLES:
            out = tmp_path_factory.mktemp("imported") / f"{arch}-{kind}"
            import_bundle(onnx_dir, out)
            _BUNDLES[arch, kind] = out
        return src, _BUNDLES[arch, kind]

    return get


def _close(ours: np.ndarray, ref: np.ndarray, tolerance: float = 1e-4) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    err = float(np.abs(ours - ref).max() / np.abs(ref).max())
    assert err <= tolerance, err
    return err


def _parity(src: Path, bundle: Path) -> None:
    """IG, saliency and occlusion of the imported bundle against Captum on the torch model (embeddings as input)."""
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    hf = AutoModelForSequenceClassification.from_pretrained(str(src), attn_implementation="eager").eval()
    emb = hf.get_input_embeddings()
    model = Model(bundle, threads=1)
    uses_tt = model.manifest.uses_token_type_ids

    def f(embeds, mask, tt=None):
        kw = {"inputs_embeds": embeds, "attention_mask": mask}
        if uses_tt:
            kw["token_type_ids"] = tt
        return torch.softmax(hf(**kw).logits, -1)

    def inputs(text):
        enc = tok(text, return_tensors="pt")
        ids = enc["input_ids"]
        base = ids.clone()
        base[0, 1:-1] = tok.pad_token_id
        extra = (enc["attention_mask"],) + ((torch.zeros_like(ids),) if uses_tt else ())
        return emb(ids).detach(), emb(base).detach(), extra

    ig = captum_attr.IntegratedGradients(f)
    for text, r in zip(TEXTS, IntegratedGradients(model, n_steps=50, output="prob").explain(TEXTS)):
        x, base, extra = inputs(text)
        attr = ig.attribute(x, baselines=base, additional_forward_args=extra, target=r.target.index, n_steps=50)
        _close(r.scores, attr.sum(-1)[0].detach().numpy())
    sal = captum_attr.Saliency(f)
    for text, r in zip(TEXTS, Saliency(model).explain(TEXTS)):
        x, _, extra = inputs(text)
        g = sal.attribute(x, target=r.target.index, abs=False, additional_forward_args=extra)
        _close(r.scores, g[0].norm(dim=-1).numpy())
    # occlusion subtracts two outputs: the tiny random models move their logits (about 20) by about 1e-2 when a
    # token is occluded, so float32 logits (about 2e-6 absolute error) leave 1e-3 of the largest score, not 1e-4; the
    # reference runs in float64 so that only our graph rounds (minilm-sst2 is checked at 1e-4, test_sst2_import_equals_export)
    hf.double()

    def f_logit(embeds, mask, tt=None):
        kw = {"inputs_embeds": embeds, "attention_mask": mask}
        if uses_tt:
            kw["token_type_ids"] = tt
        return hf(**kw).logits

    occ = captum_attr.Occlusion(f_logit)
    for text, r in zip(TEXTS, Occlusion(model, window=1, output="logit").explain(TEXTS)):
        x, base, extra = inputs(text)
        x, base = x.double(), base.double()
        attr = occ.attribute(x, sliding_window_shapes=(1, x.shape[-1]), strides=(1, x.shape[-1]), baselines=base,
                             target=r.target.index, additional_forward_args=extra)
        _close(r.scores, attr[0, :, 0].detach().numpy(), tolerance=1e-3)


@pytest.mark.slow  # exports a tiny model through optimum (torch): about a minute, once per run
@pytest.mark.parametrize("arch", FAST)
def test_imported_matches_captum(imported, arch):
    _parity(*imported(arch))


@pytest.mark.slow
@pytest.mark.parametrize("arch", SLOW)
def test_imported_matches_captum_all_architectures(imported, arch):
    _parity(*imported(arch))


def _same_contract(ours: Path, exported: Path) -> None:
    """The imported bundle's graphs take and give what the torch exporter's bundle of the same task does: roles,
    names and axes, and the graphs' own inputs and outputs."""
    a, b = Model(ours), Model(exported)
    ma, mb = a.manifest, b.manifest
    assert (ma.task, ma.labels, ma.pooling, ma.normalize, ma.feature_dim, ma.max_length) == \
        (mb.task, mb.labels, mb.pooling, mb.normalize, mb.feature_dim, mb.max_length)
    for sa, sb in ((ma.forward, mb.forward), (ma.gradient, mb.gradient)):
        assert sa is not None and sb is not None
        assert (sa.inputs, sa.outputs, sa.axes) == (sb.inputs, sb.outputs, sb.axes)
    for kind in ("forward", "gradient"):
        ga = onnx.load(str(ours / f"{kind}.onnx"), load_external_data=False).graph
        gb = onnx.load(str(exported / f"{kind}.onnx"), load_external_data=False).graph
        assert sorted(i.name for i in ga.input) == sorted(i.name for i in gb.input)
        assert [o.name for o in ga.output] == [o.name for o in gb.output]
        ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in ga.input}
        assert ranks == {i.name: len(i.type.tensor_type.shape.dim) for i in gb.input}
    # the same tiny model (same seed) both ways: the forward graphs' every output agrees
    texts = ["the movie was good", "i love it and the plot is great !"]
    for oa, ob in zip(a.forward_rows(a.encode(texts)), b.forward_rows(b.encode(texts))):
        assert oa.keys() == ob.keys()
        for key in oa:
            _close(oa[key], ob[key])


@pytest.mark.slow  # exports tiny token classifiers through optimum (torch): about a minute each, once per run
@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
def test_token_classification_import_matches_torch_and_captum(imported, arch):
    """An optimum token-classification export imported: the task detected, IG, saliency, gradient x input and
    occlusion for every position of texts of different lengths equal torch autograd and Captum (test_tasks' checks
    and tolerances for the torch-exported token classifiers)."""
    pytest.importorskip("captum.attr", reason="the parity checks need captum (test dependency)")
    from test_tasks import METHODS, TOKEN_TEXTS, Reference, _check_all_methods
    from tiny_models import TOKEN_LABELS

    src, bundle = imported(arch, "token")
    model = Model(bundle)
    m = model.manifest
    assert m.task == "token-classification" and m.labels == tuple(TOKEN_LABELS.values()) and m.source_kind == "onnx-import"
    assert set(m.validation["max_relative_error"]) == {"surgery_logits", "gradient_logits", "fd_logit", "fd_prob", "fd_top"}
    assert m.gradient is not None and m.gradient.axes["w_logit"] == ["batch", "sequence", "labels"]
    ref = Reference(str(src), arch, token=True)
    results = {name: cls(model).explain(TOKEN_TEXTS, positions="all") for name, cls in METHODS.items()}
    cases = []
    for k, text in enumerate(TOKEN_TEXTS):
        r = results["ig"][k]
        embeds, base, kw = ref.inputs(text)
        logits = ref.hf(inputs_embeds=embeds, **kw).logits[0].detach().numpy()
        assert list(r.predicted) == [TOKEN_LABELS[int(i)] for i in logits.argmax(-1)]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        assert np.abs(np.asarray(model.predict([text])[0].token_probabilities) - probs.max(-1)).max() <= 1e-5
        assert len(r.positions) == len(r.tokens) - 2  # every non-special position
        for j, p in enumerate(r.positions):
            assert p.target.index == int(logits[p.position].argmax())
            cases.append((embeds, base, ref.f(kw, p.target.index, p.position),
                          {n: results[n][k].positions[j].scores for n in METHODS}))
    _check_all_methods(model, ref, results, cases)


@pytest.mark.slow  # exports a tiny token classifier through optimum and through `xai-onnx export` (torch)
def test_token_classification_import_has_the_export_contract(imported, tiny_export):
    _, bundle = imported("bert", "token")
    _same_contract(bundle, tiny_export("bert", "token")[1])


@pytest.mark.slow  # exports a tiny encoder through optimum (torch): about a minute, once per run
def test_similarity_import_matches_autograd_and_completeness_per_side(imported):
    """An optimum feature-extraction export (with the sentence-transformers pooling files next to it) imported as a
    similarity bundle: mean pooling and Normalize read from them; the cosine equals torch's, saliency equals torch
    autograd of the cosine per side, IG is complete per side (test_tasks' checks for the torch-exported encoder)."""
    from test_tasks import PAIRS, _check_similarity

    src, bundle = imported("bert", "similarity")
    model = Model(bundle)
    m = model.manifest
    assert (m.task, m.pooling, m.normalize, m.labels, m.head_file) == ("similarity", "mean", True, ("similarity",), "")
    assert set(m.validation["max_relative_error"]) == {"surgery_features", "gradient_logits", "fd_cosine"}
    assert m.gradient is not None and "other" in m.gradient.inputs
    _check_similarity(model, str(src), PAIRS, 1e-3)


@pytest.mark.slow  # exports a tiny encoder through optimum and through `xai-onnx export` (torch)
def test_similarity_import_has_the_export_contract(imported, tiny_export):
    _, bundle = imported("bert", "similarity")
    _same_contract(bundle, tiny_export("bert", "similarity")[1])


@pytest.mark.slow  # exports a tiny encoder through optimum (torch): about a minute, once per run
def test_sentence_transformers_export_pools_as_its_graph_does(imported, optimum_dir, tmp_path):
    """optimum's sentence-transformers export (token_embeddings and its own sentence_embedding, no modules.json next
    to it): the import finds the graph's CLS pooling and normalisation, and its features equal sentence_embedding."""
    import onnxruntime as ort

    _, onnx_dir = optimum_dir("bert", "st")
    _, bundle = imported("bert", "st")
    model = Model(bundle)
    m = model.manifest
    assert (m.task, m.pooling, m.normalize) == ("similarity", "cls", True)
    assert not (onnx_dir / "modules.json").exists()
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    for enc, ours in zip(model.encode(TEXTS), model.forward_rows(model.encode(TEXTS))):
        ids = np.asarray([enc.ids], np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        ref = session.run(["sentence_embedding"], {k: v for k, v in feeds.items() if k in names})[0]
        _close(ours["features"], ref)
    with pytest.raises(ExportInputError, match="3 axes"):  # a token classifier's logits are not a sequence classifier's
        import_bundle(optimum_dir("bert", "token")[1], tmp_path / "wrong", task="sequence-classification")


@pytest.mark.slow  # exports a tiny encoder through optimum (torch): about a minute, once per run
def test_similarity_pooling_override(optimum_dir, tmp_path):
    """--pooling cls without the Normalize: the features are the first token's state, as torch computes them."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModel, AutoTokenizer

    src, onnx_dir = optimum_dir("bert", "similarity")
    m = import_bundle(onnx_dir, tmp_path / "cls", pooling="cls", normalize=False)
    assert (m.pooling, m.normalize, m.architecture) == ("cls", False, "BertModel+cls-pooling")
    model = Model(tmp_path / "cls")
    tok = AutoTokenizer.from_pretrained(str(src))
    enc = AutoModel.from_pretrained(str(src), attn_implementation="eager").eval()
    texts = ["the movie was good", "bad"]
    for text, ours in zip(texts, model.forward_rows(model.encode(texts))):
        with torch.no_grad():
            ref = enc(**tok(text, return_tensors="pt")).last_hidden_state[0, 0].numpy()
        _close(ours["features"][0], ref)
    with pytest.raises(ExportInputError, match="pooling"):
        import_bundle(onnx_dir, tmp_path / "bad", pooling="max")
    with pytest.raises(ExportInputError, match="similarity"):
        import_bundle(optimum_dir("bert")[1], tmp_path / "bad2", pooling="cls")


@pytest.mark.slow  # exports a tiny model through optimum (torch): about a minute, once per run
def test_manifest_records_validation_and_io(imported):
    _, bundle = imported("bert")
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["source_kind"] == "onnx-import"
    errors = m["validation"]["max_relative_error"]
    assert set(errors) == {"surgery_logits", "gradient_logits", "fd_logit", "fd_prob", "fd_top"}
    assert max(v for k, v in errors.items() if k.startswith("fd_")) <= m["validation"]["tolerance"]["fd"]
    assert m["gradient"]["inputs"].keys() >= {"inputs_embeds", "attention_mask", "w_logit", "w_prob", "w_top"}
    graph = onnx.load(str(bundle / "gradient.onnx"), load_external_data=False).graph
    assert [o.name for o in graph.output] == ["logits", "grad"]
    assert not any(i.name == "input_ids" for i in graph.input)


@pytest.mark.slow  # exports a tiny model through optimum (torch): about a minute, once per run
def test_bundle_is_built_aside_and_moved_in(optimum_dir, tmp_path, monkeypatch):
    from xai_onnx_exporters import ValidationError
    from xai_onnx_exporters.onnx_import import validate_fd

    _, onnx_dir = optimum_dir("bert")
    monkeypatch.setattr(validate_fd, "FD_TOLERANCE", 0.0)  # every check fails
    out = tmp_path / "b"
    with pytest.raises(ValidationError, match="fd_"):
        import_bundle(onnx_dir, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow  # exports a tiny model through optimum (torch): about a minute, once per run
def test_quantized_model_is_forward_only(optimum_dir, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _, onnx_dir = optimum_dir("bert")
    q = tmp_path / "q"
    q.mkdir()
    for f in onnx_dir.iterdir():
        if f.name != "model.onnx":
            (q / f.name).write_bytes(f.read_bytes())
    quantize_dynamic(onnx_dir / "model.onnx", q / "model.onnx", weight_type=QuantType.QInt8)
    assert any(n.op_type == "MatMulInteger" for n in onnx.load(str(q / "model.onnx")).graph.node)
    m = import_bundle(q, tmp_path / "b")
    assert m.gradient is None and "gradient methods" in m.validation["forward_only"]
    model = Model(tmp_path / "b")
    r = Occlusion(model).explain(TEXTS[:1])
    assert np.isfinite(r[0].scores).all()
    with pytest.raises(GradientUnavailableError):
        Saliency(model).explain(TEXTS[:1])


@pytest.mark.slow  # exports a tiny model through optimum (torch): about a minute, once per run
def test_cli_import(optimum_dir, tmp_path):
    _, onnx_dir = optimum_dir("bert")
    proc = subprocess.run([sys.executable, "-m", "xai_onnx_exporters.onnx_import.cli", "--model", str(onnx_dir / "model.onnx"),
                           "--tokenizer", str(onnx_dir / "tokenizer.json"), "--labels", "a,b,c", "--max-length", "20",
                           str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["labels"] == ["a", "b", "c"] and summary["gradient"] and summary["max_length"] == 20
    proc = subprocess.run([sys.executable, "-m", "xai_onnx_exporters.onnx_import.cli", str(tmp_path / "missing"), str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "source not found" in proc.stderr


BLOCK_TORCH = blocker("torch", "transformers", "optimum", "onnxscript", "captum", "sentence_transformers")


@pytest.mark.slow  # exports a tiny model through optimum (torch): about a minute, once per run
def test_import_runs_without_torch(optimum_dir, tmp_path):
    _, onnx_dir = optimum_dir("bert")
    code = BLOCK_TORCH + textwrap.dedent(f"""
        from xai_onnx_exporters.onnx_import import import_bundle
        import xai_onnx
        import_bundle({str(onnx_dir)!r}, {str(tmp_path / "b")!r})
        r = xai_onnx.IntegratedGradients(xai_onnx.Model({str(tmp_path / "b")!r})).explain(["good movie"])
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        print("ok", len(r[0].scores))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "4"]


# ---- the differentiator alone, on handmade graphs (no torch) ----------------------------------------------------

def _tiny_graph(op_between: str, vocab: int = 10) -> onnx.ModelProto:
    """input_ids -> Gather(table) -> op -> mean over positions -> Gemm -> logits."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(vocab, 4)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "W"),
             numpy_helper.from_array(np.zeros(3, np.float32), "b"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["e"]),
             helper.make_node(op_between, ["e"], ["h"]),
             helper.make_node("ReduceMean", ["h", "axis1"], ["pooled"], keepdims=0),
             helper.make_node("Gemm", ["pooled", "W", "b"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
                                           helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_unsupported_operator_is_refused_by_name():
    from xai_onnx_exporters.onnx_import.surgery import cut

    s = cut(_tiny_graph("Sin"), fill_id=1)
    with pytest.raises(UnsupportedOperatorError, match=r"operator Sin \(node"):
        gradient_model(s.model)


@pytest.mark.parametrize("op", ["Tanh", "Erf", "Sigmoid", "Relu", "Exp"])
def test_unary_rules_against_finite_differences(op):
    import onnxruntime as ort
    from xai_onnx_exporters.onnx_import.surgery import cut

    s = cut(_tiny_graph(op), fill_id=1)
    g = gradient_model(s.model)
    fwd = ort.InferenceSession(s.model.SerializeToString())
    grad = ort.InferenceSession(g.SerializeToString())
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 4))
    x = (np.sign(x) * np.maximum(np.abs(x), 0.1)).astype(np.float32)  # no finite step across Relu's kink
    mask = np.ones((2, 5), np.int64)
    w = {"w_logit": np.eye(3, dtype=np.float32)[[0, 2]], "w_prob": np.zeros((2, 3), np.float32), "w_top": np.zeros((2, 2), np.float32)}
    out = grad.run(["grad"], {"inputs_embeds": x, "attention_mask": mask, **w})[0]
    h, num = 1e-2, np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        xp, xm = x.astype(np.float64), x.astype(np.float64)
        xp[idx] += h
        xm[idx] -= h
        fp = fwd.run(["logits"], {"inputs_embeds": xp.astype(np.float32), "attention_mask": mask})[0]
        fm = fwd.run(["logits"], {"inputs_embeds": xm.astype(np.float32), "attention_mask": mask})[0]
        num[idx] = ((fp - fm) * w["w_logit"]).sum() / (2 * h)
    assert np.abs(out - num).max() <= 2e-3 * np.abs(num).max()


def _asgi_get(app, path: str) -> tuple[int, dict]:
    """One GET through the ASGI application, in this process (no server, no port)."""
    import asyncio

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


@pytest.mark.parametrize("headless", [False, True])
def test_headless_import_lists_what_it_lacks(tmp_path, headless):
    """A graph whose logits no linear layer produces (a Tanh after the Gemm): the bundle has no features, its manifest
    says why, influence and prototypes refuse with that reason and /v1/model lists them as unavailable, while the
    attribution methods still run. The same graph without the Tanh keeps its features and lacks nothing."""
    from handmade import VOCAB, _tokenizer
    from inprocess import run_cli
    from onnx import helper

    from xai_onnx import FeaturesUnavailableError
    from xai_onnx.influence import InfluenceIndex

    graph = _tiny_graph("Tanh", vocab=len(VOCAB))
    if headless:
        gemm = next(n for n in graph.graph.node if n.op_type == "Gemm")
        gemm.output[0] = "pre_logits"
        graph.graph.node.append(helper.make_node("Tanh", ["pre_logits"], ["logits"]))
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(graph, str(src / "model.onnx"))
    _tokenizer().save(str(src / "tokenizer.json"))
    m = import_bundle(src, tmp_path / "b", max_length=8, labels=["neg", "neu", "pos"])
    model = Model(tmp_path / "b")
    texts = ["good movie", "not fun"]
    assert np.isfinite(IntegratedGradients(model).explain(texts)[0].scores).all()
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cli = run_cli("prototypes", str(tmp_path / "b"), "--data", str(data), "--n-prototypes", "1", "--n-criticisms", "1")
    pytest.importorskip("starlette", reason="/v1/model needs the serve extra")
    from xai_onnx.serve import create_app

    status, info = _asgi_get(create_app(model), "/v1/model")
    assert status == 200
    if not headless:
        assert m.unavailable == {} and model.has_features and m.feature_dim == 4 and m.head_file == "head.npz"
        assert model.features(texts).shape == (2, 4) and model.unavailable_methods() == {}
        assert cli.returncode == 0, cli.stderr
        assert info["unavailable"] == {}
        return
    reason = "no classification head found in the imported graph"
    assert m.unavailable["features"].startswith(reason) and set(m.unavailable) == {"features"}
    assert "features" not in m.forward.outputs and m.head_file == "" and m.feature_dim == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["unavailable"] == m.unavailable
    assert not model.has_features
    assert model.unavailable_methods() == {"influence": m.unavailable["features"], "prototypes": m.unavailable["features"]}
    with pytest.raises(FeaturesUnavailableError, match=reason):
        model.features(texts)
    with pytest.raises(FeaturesUnavailableError, match="influence needs the features"):
        InfluenceIndex(model).fit(texts, ["neg", "pos"])
    assert cli.returncode == 2 and "prototypes needs the features" in cli.stderr and reason in cli.stderr
    assert info["unavailable"] == {"influence": m.unavailable["features"], "prototypes": m.unavailable["features"]}
    assert "ig" in info["methods"]


# ---- minilm-sst2: optimum export + import against `xai-onnx export` of the same checkpoint -----------------------

@pytest.fixture(scope="session")
def sst2_imported(tmp_path_factory):
    from conftest import SST2_MODEL, need_shared

    need_shared()
    pytest.importorskip("optimum.exporters.onnx", reason="optimum exports the ONNX model under test")
    from optimum.exporters.onnx import main_export

    root = tmp_path_factory.mktemp("sst2-import")
    main_export(model_name_or_path=str(SST2_MODEL), output=str(root / "optimum"), task="text-classification")
    import_bundle(root / "optimum", root / "bundle")
    return root


@pytest.mark.slow
def test_sst2_import_equals_export(sst2_imported, sst2_bundle):
    """Every method of the imported bundle equals the exported bundle's within 1e-4 of the largest score; finite
    differences within 1e-3: they divide float32 differences of F by a step of 1e-2, so two float32 graphs of the
    same model cannot agree closer (measured 1.0e-3 by hand, IG 7e-7, occlusion 6.7e-6); the bound is 2e-3."""
    from conftest import sst2_sentences

    from xai_onnx import METHODS

    texts = [t for _, t in sst2_sentences("dev", 4)]
    ours, ref = Model(sst2_imported / "bundle", threads=2), Model(sst2_bundle, threads=2)
    assert ours.manifest.max_length == ref.manifest.max_length and ours.labels == ref.labels
    np.testing.assert_array_equal(ours.embeddings, ref.embeddings)
    for name in ("ig", "saliency", "grad_x_input", "occlusion", "fd"):
        cls = METHODS[name]
        for a, b in zip(cls(ours).explain(texts), cls(ref).explain(texts)):
            assert a.tokens == b.tokens and a.target == b.target, name
            _close(np.asarray(a.scores), np.asarray(b.scores), **({"tolerance": 2e-3} if name == "fd" else {}))
    pa, pb = ours.predict(texts), ref.predict(texts)
    for x, y in zip(pa, pb):
        assert x.target == y.target and max(abs(p - q) for p, q in zip(x.logits, y.logits)) <= 1e-4


@pytest.mark.slow
def test_sst2_quantized_import(sst2_imported, tmp_path):
    """A dynamically quantised minilm-sst2: forward-only methods run, gradient methods refuse, fidelity reported."""
    from conftest import sst2_sentences
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from xai_onnx import FiniteDifference

    src = sst2_imported / "optimum"
    q = tmp_path / "q"
    q.mkdir()
    for f in src.iterdir():
        if f.name != "model.onnx" and f.is_file():
            (q / f.name).write_bytes(f.read_bytes())
    quantize_dynamic(src / "model.onnx", q / "model.onnx", weight_type=QuantType.QInt8)
    m = import_bundle(q, tmp_path / "b")
    assert m.gradient is None
    texts = [t for _, t in sst2_sentences("dev", 16)]
    qm, fm = Model(tmp_path / "b"), Model(sst2_imported / "bundle")
    agree = np.mean([a.target == b.target for a, b in zip(qm.predict(texts), fm.predict(texts))])
    occ_q, occ_f = Occlusion(qm).explain(texts[:4]), Occlusion(fm).explain(texts[:4])
    from xai_onnx.evaluation import spearman

    rho = [spearman(np.asarray(a.scores), np.asarray(b.scores)) for a, b in zip(occ_q, occ_f)]
    print(f"int8 vs float32: label agreement {agree:.3f}, occlusion rank correlation {np.mean(rho):.3f}")
    assert agree >= 0.75 and np.mean(rho) > 0.5
    FiniteDifference(qm).explain(texts[:1])
    with pytest.raises(GradientUnavailableError):
        IntegratedGradients(qm).explain(texts[:1])
