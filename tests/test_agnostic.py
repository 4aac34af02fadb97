"""LIME, KernelSHAP, Partition SHAP, the perturbation layer and word granularity, on handmade bundles (no torch).

The references are computed here, independently of the runtime: F of every coalition straight from the forward ONNX
graph in onnxruntime, Shapley values by their subset formula, and a linear bag-of-words bundle whose Shapley values
(and LIME's coefficients) are its own word weights.
"""

from __future__ import annotations

import itertools
import json
from math import factorial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from xai_onnx import InputError, Model
from xai_onnx.granularity import to_words
from xai_onnx.methods import KernelShap, Lime, PartitionShap
from xai_onnx.perturbation import Perturber, features_of, word_groups
from xai_onnx.registry import make_explainer

AGNOSTIC = (Lime, KernelShap, PartitionShap)
TEXTS = ["the movie good.", "a very dull movie not fun", "good", "", "not bad not good very fun the a movie dull"]


@pytest.fixture(scope="module")
def model(handmade):
    return Model(handmade[0])


# ---- an independent reference: F of a coalition from the ONNX graph, Shapley values by the subset formula --------
class Reference:
    def __init__(self, bundle: Path, masking: str):
        self.session = ort.InferenceSession(str(bundle / "forward.onnx"), providers=["CPUExecutionProvider"])
        self.E = np.load(bundle / "embeddings.npy")
        manifest = json.loads((bundle / "manifest.json").read_text())
        self.fill = None if masking == "delete" else manifest["special_tokens"][masking]["id"]

    def f(self, ids: np.ndarray, words: list[list[int]], present: tuple[int, ...], target: int) -> float:
        """The target's probability with the words not in ``present`` masked."""
        ids = ids.copy()
        gone = [p for w, pos in enumerate(words) if w not in present for p in pos]
        if self.fill is None:
            ids = np.delete(ids, gone)
        else:
            ids[gone] = self.fill
        x = self.E[ids][None].astype(np.float32)
        logits = self.session.run(["logits"], {"inputs_embeds": x,
                                               "attention_mask": np.ones((1, len(ids)), np.int64)})[0][0]
        p = np.exp(logits.astype(np.float64) - logits.max())
        return float((p / p.sum())[target])

    def shapley(self, ids: np.ndarray, words: list[list[int]], target: int) -> np.ndarray:
        M = len(words)
        f = {S: self.f(ids, words, S, target) for k in range(M + 1) for S in itertools.combinations(range(M), k)}
        phi = np.zeros(M)
        for i in range(M):
            others = [j for j in range(M) if j != i]
            for k in range(M):
                w = factorial(k) * factorial(M - k - 1) / factorial(M)
                for S in itertools.combinations(others, k):
                    phi[i] += w * (f[tuple(sorted(S + (i,)))] - f[S])
        return phi


@pytest.mark.parametrize("masking", ["pad", "delete", "mask"])
def test_kernel_shap_exact_mode_equals_brute_force_shapley(handmade, model, masking):
    ref = Reference(handmade[0], masking)
    texts = ["a very dull movie not fun at all the good", "good bad", "the movie good."]  # 10, 2 and 3 words
    results = KernelShap(model, samples=1023, baseline=masking).explain(texts)
    for text, r in zip(texts, results):
        enc = model.encode([text])[0]
        expected = ref.shapley(enc.ids, word_groups(enc), r.target.index)
        assert r.settings["exact"] is True and r.granularity == "word"
        assert len(r.scores) == len(expected)
        np.testing.assert_allclose(r.scores, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
        assert r.baseline_value == pytest.approx(ref.f(enc.ids, word_groups(enc), (), r.target.index), abs=1e-6)


@pytest.mark.parametrize("cls", [KernelShap, PartitionShap])
@pytest.mark.parametrize("samples", [1, 2, 3, 7, 20, 64, 300])
@pytest.mark.parametrize("masking,granularity", [("pad", "word"), ("delete", "token"), ("unk", "token")])
def test_efficiency_at_any_budget(model, cls, samples, masking, granularity):
    texts = ["a very dull movie not fun at all the good bad very", "good movie", "the movie good."]
    for r in cls(model, samples=samples, baseline=masking, granularity=granularity).explain(texts):
        gap = r.output_value - r.baseline_value
        assert abs(r.scores.sum() - gap) <= 1e-6 * max(abs(gap), 1e-12)
        assert abs(r.convergence_delta) <= 1e-6 * max(abs(gap), 1e-12)
        assert r.settings["evaluations"] <= samples or r.settings.get("exact")


def test_partition_shap_spends_at_most_its_budget_and_expands_fully_when_it_can(model):
    text = "a very dull movie not fun at all the good bad very"
    small = PartitionShap(model, samples=9).explain([text])[0]
    big = PartitionShap(model, samples=5000).explain([text])[0]
    assert small.settings["evaluations"] <= 9 and small.settings["exact"] is False
    assert big.settings["exact"] is True and big.settings["evaluations"] < 5000


# ---- a linear bag-of-words bundle: logit(positive) = sum of the present tokens' weights ----------------------------
@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """Embeddings of width 1 hold each word's weight (0 for special tokens); logits = (-s, s), s = sum over the
    attended tokens. Shapley values of the positive logit, and LIME's coefficients, are the words' weights under
    deletion and under pad replacement (the pad weight is 0)."""
    from handmade import VOCAB, _tokenizer

    from xai_onnx.manifest import SCHEMA_VERSION, GraphSpec, Manifest, SpecialToken

    d = tmp_path_factory.mktemp("bag")
    rng = np.random.default_rng(7)
    weight = np.where(np.arange(len(VOCAB)) < 5, 0.0, rng.normal(size=len(VOCAB))).astype(np.float32)
    weight[VOCAB.index("[UNK]")] = 0.75  # punctuation is unknown to the vocabulary: it still counts
    inits = [numpy_helper.from_array(np.array([[-1.0, 1.0]], np.float32), "sign"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "axis_last"], ["m3"]),
             helper.make_node("Mul", ["inputs_embeds", "m3"], ["xm"]),
             helper.make_node("ReduceSum", ["xm", "axis1"], ["features"], keepdims=0),
             helper.make_node("MatMul", ["features", "sign"], ["logits"])]
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "axis_last"))
    g = helper.make_graph(nodes, "bag", [
        helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", "seq", 1]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])], [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]),
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), d / "forward.onnx")
    np.save(d / "embeddings.npy", weight[:, None])
    (d / "weights.bin").write_bytes(b"")
    (d / "tokenizer.json").write_text(_tokenizer().to_str(), encoding="utf-8")
    io = {"inputs_embeds": "inputs_embeds", "attention_mask": "attention_mask"}
    Manifest(
        schema_version=SCHEMA_VERSION, source_kind="handmade", model_type="bag", architecture="LinearBag",
        labels=("negative", "positive"), special_tokens={r: SpecialToken(t, VOCAB.index(t)) for r, t in
                                                         [("pad", "[PAD]"), ("unk", "[UNK]"), ("cls", "[CLS]"),
                                                          ("sep", "[SEP]"), ("mask", "[MASK]")]},
        max_length=32, embedding_dim=1, feature_dim=1, vocab_size=len(VOCAB), uses_token_type_ids=False, opset=18,
        tokenizer_file="tokenizer.json", embeddings_file="embeddings.npy", head_file=None, weights_file="weights.bin",
        forward=GraphSpec("forward.onnx", io, {"logits": "logits", "features": "features"}), gradient=None,
    ).save(d)
    return Model(d), {w: float(weight[i]) for i, w in enumerate(VOCAB)}


BAG_TEXTS = ["a very dull movie not fun at the good bad very fun", "the movie good.", "dull"]


def _expected_word_weights(model, weights, text):
    enc = model.encode([text])[0]
    return np.array([sum(weights[enc.tokens[p]] for p in g) for g in word_groups(enc)])


@pytest.mark.parametrize("masking", ["delete", "pad"])
@pytest.mark.parametrize("cls,kwargs", [(KernelShap, {"samples": 200}), (Lime, {"samples": 300, "alpha": 0.0}),
                                        (PartitionShap, {"samples": 5000})])
def test_linear_bag_of_words_weights_are_recovered(bag, masking, cls, kwargs):
    model, weights = bag
    results = cls(model, baseline=masking, output="logit", **kwargs).explain(BAG_TEXTS, target="positive")
    for text, r in zip(BAG_TEXTS, results):
        expected = _expected_word_weights(model, weights, text)
        np.testing.assert_allclose(r.scores, expected, atol=1e-5)
    if cls is KernelShap:
        assert results[0].settings["exact"] is False  # 12 words in 200 evaluations: sampled, not enumerated


def test_lime_default_ridge_shrinks_a_little_and_reports_its_fit(bag):
    model, weights = bag
    r = Lime(model, output="logit", baseline="delete").explain(BAG_TEXTS[:1], target="positive")[0]
    expected = _expected_word_weights(model, weights, BAG_TEXTS[0])
    np.testing.assert_allclose(r.scores, expected, atol=0.05 * np.abs(expected).max())
    assert not np.allclose(r.scores, expected, atol=1e-6)  # alpha=1 is not least squares
    assert 0.99 < r.settings["local_fit_r2"] <= 1.0


@pytest.mark.parametrize("cls", AGNOSTIC)
def test_same_seed_same_scores_other_seed_other_scores(model, cls):
    text = ["a very dull movie not fun at all the good bad very"]
    a = cls(model, samples=60, random_state=3).explain(text)[0].scores
    b = cls(model, samples=60, random_state=3).explain(text)[0].scores
    np.testing.assert_array_equal(a, b)
    if cls is not PartitionShap:  # partition's seed only breaks ties between equal priorities
        c = cls(model, samples=60, random_state=4).explain(text)[0].scores
        assert not np.allclose(a, c)


@pytest.mark.parametrize("cls", AGNOSTIC)
def test_batching_changes_nothing(model, cls):
    together = cls(model, samples=50).explain(TEXTS)
    alone = [cls(model, samples=50).explain([t])[0] for t in TEXTS]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


@pytest.mark.parametrize("cls", AGNOSTIC)
def test_results_per_word_and_per_token(model, cls):
    text = "the movie good."
    word = cls(model, samples=40).explain([text])[0]
    token = cls(model, samples=40, granularity="token").explain([text])[0]
    assert word.granularity == "word" and word.to_dict()["granularity"] == "word"
    assert word.tokens == ("the", "movie", "good.") and word.offsets == ((0, 3), (4, 9), (10, 15))
    assert token.granularity == "token" and token.tokens[0] == "[CLS]" and token.tokens[-1] == "[SEP]"
    assert token.scores[0] == 0.0 and token.scores[-1] == 0.0  # special tokens are never features
    assert len(token.scores) == len(model.encode([text])[0])
    empty = cls(model, samples=40).explain([""])[0]
    assert empty.scores.shape == (0,) and empty.warnings


@pytest.mark.parametrize("cls", AGNOSTIC)
def test_registry_round_trip_and_forward_only_bundle(model, handmade_forward_only, cls):
    ex = make_explainer(model, cls.name, {"samples": 30, "random_state": 5, "granularity": "token",
                                          "baseline": "delete"})
    again = type(ex)(model, **ex.settings())
    assert again.settings() == ex.settings()
    np.testing.assert_array_equal(ex.explain(TEXTS[:2])[1].scores, again.explain(TEXTS[:2])[1].scores)
    fwd = Model(handmade_forward_only)
    assert not fwd.has_gradient
    r = make_explainer(fwd, cls.name, {"samples": 30}).explain(TEXTS[:2])
    np.testing.assert_allclose(r[1].scores, cls(model, samples=30).explain(TEXTS[:2])[1].scores, atol=1e-6)


@pytest.mark.parametrize("options", [{"samples": 0}, {"baseline": "zeros"}, {"granularity": "char"},
                                     {"random_state": -1}, {"samples": 2.5}])
@pytest.mark.parametrize("cls", AGNOSTIC)
def test_bad_options_are_refused(model, cls, options):
    with pytest.raises(InputError) as exc:
        make_explainer(model, cls.name, options)
    assert repr(next(iter(options))) in str(exc.value)


def test_lime_kernel_width_must_be_positive(model):
    with pytest.raises(InputError, match="kernel_width"):
        make_explainer(model, "lime", {"kernel_width": 0.0})


# ---- the perturbation layer ----------------------------------------------------------------------------------------
def test_deletion_makes_rows_shorter_and_replacement_keeps_their_length(model):
    enc = model.encode(["a very dull movie"])[0]
    feats = features_of(enc, "word")
    masks = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=bool)
    groups, order = Perturber(model, "delete").groups(feats, masks)
    lengths = {int(r): g.embeds.shape[1] for g, rows in _split(groups, order) for r in rows}
    assert lengths == {0: 6, 1: 4, 2: 2, 3: 5}
    groups, _ = Perturber(model, "pad").groups(feats, masks)
    assert len(groups) == 1 and groups[0].embeds.shape[:2] == (4, 6)
    pad = model.embed(np.array([model.special_id("pad")]))[0]
    np.testing.assert_array_equal(groups[0].embeds[1, 2], pad)
    np.testing.assert_array_equal(groups[0].embeds[1, 1], model.embed(enc.ids[1:2])[0])
    np.testing.assert_array_equal(groups[0].embeds[2, 0], model.embed(enc.ids[:1])[0])  # [CLS] always kept


def _split(groups, order):
    at = 0
    for g in groups:
        yield g, order[at:at + g.embeds.shape[0]]
        at += g.embeds.shape[0]


def test_words_never_split_a_word_piece():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from xai_onnx.tokenization import TextEncoder

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "fun", "##ny", "film", "##s", ","])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    enc = _encode(tok, "funny films, fun")
    assert enc.tokens == ("[CLS]", "fun", "##ny", "film", "##s", ",", "fun", "[SEP]")
    feats = features_of(enc, "word")
    assert feats.texts == ("funny", "films,", "fun")
    assert [p.tolist() for p in feats.positions] == [[1, 2], [3, 4, 5], [6]]
    assert features_of(enc, "token").texts == ("fun", "ny", "film", "s", ",", "fun")
    assert TextEncoder  # the runtime's encoder is what builds Encoded in the methods


def _encode(tok, text):
    from xai_onnx.tokenization import Encoded

    e = tok.encode(text)
    return Encoded(text, np.asarray(e.ids), np.asarray(e.type_ids), np.asarray(e.special_tokens_mask, dtype=bool),
                   tuple(e.tokens), tuple(tuple(o) for o in e.offsets), False)


def test_to_words_sums_or_takes_the_norm(model):
    from xai_onnx.methods import Occlusion

    r = Occlusion(model).explain(["the movie good."])[0]
    w = to_words(r)
    assert w.tokens == ("the", "movie", "good.") and w.granularity == "word"
    np.testing.assert_allclose(w.scores, [r.scores[1], r.scores[2], r.scores[3] + r.scores[4]])
    n = to_words(r, merge="norm")
    assert n.scores[2] == pytest.approx(np.hypot(r.scores[3], r.scores[4]))


# ---- word granularity for every method -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ig", "grad_x_input", "occlusion", "fd", "saliency"])
def test_every_method_gives_words_merging_its_tokens(model, name):
    from xai_onnx.registry import get_method

    cls = get_method(name)
    texts = ["the movie good.", "very dull, not fun"]
    tokens = cls(model).explain(texts)
    words = cls(model, granularity="word").explain(texts)
    for t, w in zip(tokens, words):
        assert w.granularity == "word" and t.granularity == "token"
        groups = word_groups(model.encode([t.text])[0])
        assert w.tokens == tuple(t.text[t.offsets[g[0]][0]:t.offsets[g[-1]][1]] for g in groups)
        merged = [np.linalg.norm(t.scores[g]) if name == "saliency" else t.scores[g].sum() for g in groups]
        np.testing.assert_allclose(w.scores, merged, rtol=1e-12, atol=1e-12)
        assert w.convergence_delta == t.convergence_delta
        assert w.settings["granularity"] == "word"


def test_word_results_render_and_print_words(model, handmade, capsys):
    from xai_onnx.cli import main
    from xai_onnx.html import render

    r = Lime(model, samples=30).explain(["the movie good."])[0]
    page = render([r])
    assert ">good.</span>" in page and ">[CLS]<" not in page
    assert main(["explain", str(handmade[0]), "--text", "the movie good.", "--method", "kernel_shap", "--samples", "50",
                 "--granularity", "word", "--baseline", "delete", "--random-state", "3"]) == 0
    out = json.loads(capsys.readouterr().out)["results"][0]
    assert out["granularity"] == "word" and out["tokens"] == ["the", "movie", "good."]
    assert out["settings"]["samples"] == 50 and out["settings"]["baseline"] == "delete"
    assert main(["explain", str(handmade[0]), "--text", "good", "--method", "occlusion", "--granularity", "word"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["tokens"] == ["good"]


def test_word_level_faithfulness(model):
    from xai_onnx.evaluation import FaithfulnessEvaluator
    from xai_onnx.methods import IntegratedGradients

    one_token_words = ["a very dull movie", "not fun the good movie"]
    ig = IntegratedGradients(model, n_steps=8)
    tok = FaithfulnessEvaluator(model).evaluate(one_token_words, {"ig": ig})
    word = FaithfulnessEvaluator(model, granularity="word").evaluate(one_token_words, {"ig": ig})
    assert word.methods[0].comprehensiveness == pytest.approx(tok.methods[0].comprehensiveness, abs=1e-12)
    assert word.settings["granularity"] == "word"
    # a word of two tokens ("good." is good + [UNK]) is ranked and removed whole; word-level explainers are taken as is
    r = FaithfulnessEvaluator(model, granularity="word").evaluate(
        ["the movie good.", "very dull, not fun"], {"ig": ig, "kernel_shap": KernelShap(model, samples=64)})
    assert [m.method for m in r.methods] == ["ig", "kernel_shap"] and r.methods[1].n_texts == 2
    with pytest.raises(InputError, match="granularity='word'"):
        FaithfulnessEvaluator(model).evaluate(["the movie good."], {"kernel_shap": KernelShap(model, samples=64)})


def test_sentence_pairs_words_come_from_their_own_text(tmp_path):
    from handmade import build_with_pairs

    build_with_pairs(tmp_path)
    model = Model(tmp_path)
    pair = [("the movie good.", "very dull, not fun")]
    for ex in (KernelShap(model, samples=2000), PartitionShap(model, samples=2000), Lime(model, samples=100)):
        r = ex.explain(pair)[0]
        assert r.tokens == ("the", "movie", "good.", "very", "dull,", "not", "fun")
        assert r.segments == (0, 0, 0, 1, 1, 1, 1)
    r = KernelShap(model, samples=2000, baseline="delete", granularity="token").explain(pair)[0]
    assert r.settings["exact"] and abs(r.convergence_delta) < 1e-9
    assert r.scores[r.tokens.index("[SEP]")] == 0.0


def test_int8_forward_graph_for_forward_only_methods(tmp_path, monkeypatch, onnx_calls):
    pytest.importorskip("onnxruntime.quantization")
    import dataclasses

    from handmade import build
    from xai_onnx_exporters.quantize import forward_int8_fidelity, quantize_gradient

    from xai_onnx.manifest import Manifest

    build(tmp_path, gradient=False, dim=16)
    quantize_gradient(tmp_path, "forward.onnx", "forward.int8.onnx")
    m = Manifest.load(tmp_path)
    fidelity = forward_int8_fidelity(tmp_path, "forward.onnx", "forward.int8.onnx", np.load(tmp_path / "embeddings.npy"),
                                     False, 16)
    dataclasses.replace(m, forward_int8=dataclasses.replace(m.forward, file="forward.int8.onnx"),
                        validation={"int8_forward": fidelity}).save(tmp_path)
    f32, i8 = Model(tmp_path), Model(tmp_path, precision="int8")
    assert i8.forward_spec.file == "forward.int8.onnx" and f32.forward_spec.file == "forward.onnx"
    assert 0.0 < fidelity["max_abs_probability_difference"] < 0.05 and fidelity["argmax_agreement"] >= 0.9
    texts = ["a very dull movie not fun at all the good", "the movie good."]
    a = KernelShap(f32, samples=1023).explain(texts)
    b = KernelShap(i8, samples=1023).explain(texts)
    for x, y in zip(a, b):
        assert y.settings["precision"] == "int8" and "precision" not in x.settings
        assert not np.array_equal(x.scores, y.scores)  # another graph ran
        np.testing.assert_allclose(y.scores, x.scores, atol=0.05 * np.abs(x.scores).max())
        assert abs(y.convergence_delta) < 1e-9  # efficiency holds whatever the graph
    # the CPU cache cap cuts float32 calls only: an int8 call's result depends on the rows it holds
    import xai_onnx.model as xm

    monkeypatch.setitem(xm.CPU_CALL_ELEMENTS, False, 1)
    calls = onnx_calls
    calls.clear()
    again = KernelShap(i8, samples=1023).explain(texts[:1])[0]
    assert max(calls) == i8.batch_size
    np.testing.assert_array_equal(again.scores, b[0].scores)
    calls.clear()
    KernelShap(f32, samples=1023).explain(texts[:1])
    assert max(calls) == 1


def test_repeated_masks_run_once_with_the_same_values(model):
    enc = model.encode(["a very dull movie not"])[0]
    feats = features_of(enc, "word")
    rng = np.random.default_rng(0)
    masks = rng.random((40, 5)) < 0.5
    masks = np.concatenate([masks, masks[::-1], masks[:3]])
    p = Perturber(model, "delete")
    out = p.outputs([(feats, masks)])[0]
    assert p.forward_rows[0] == len(np.unique(masks, axis=0)) < masks.shape[0]
    one_by_one = np.concatenate([p.outputs([(feats, m[None])])[0]["logits"] for m in masks])
    np.testing.assert_allclose(out["logits"], one_by_one, atol=1e-5)
    r = Lime(model, samples=500).explain(["a very dull movie"])[0]
    assert r.settings["forward_passes"] < 499  # 4 words: 15 distinct coalitions at most


@pytest.mark.slow
def test_every_task_token_classification_and_similarity(tiny_export):
    """Forward-only on every task: efficiency per explained position (token classification, per token, replacement
    only) and per side (similarity, words of each text)."""
    _, bundle = tiny_export("bert", "token")
    model = Model(bundle)
    r = KernelShap(model, samples=300).explain(["i love it and the plot is great !"], positions="all")[0]
    assert len(r.positions) >= 8
    for p in r.positions:
        assert abs(p.scores.sum() - (p.output_value - p.baseline_value)) <= 1e-6 * max(abs(p.output_value), 1e-9)
    with pytest.raises(InputError, match="delete"):
        Lime(model, baseline="delete")
    with pytest.raises(InputError, match="token classification"):
        Lime(model, granularity="word")
    _, bundle = tiny_export("bert", "similarity")
    model = Model(bundle)
    pair = [("the movie was good", "a fun film")]
    r = PartitionShap(model, samples=200).explain(pair)[0]
    assert r.tokens == ("the", "movie", "was", "good", "a", "fun", "film") and r.segments == (0, 0, 0, 0, 1, 1, 1)
    assert all(abs(side["convergence_delta"]) < 1e-9 for side in r.sides)
    t = Lime(model, samples=200, granularity="token").explain(pair)[0]
    assert t.tokens[0] == "[CLS]" and t.granularity == "token"
