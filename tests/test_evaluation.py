"""Faithfulness measures on the handmade linear model, where the exact ranking and the values are known."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from handmade import VOCAB, reference_logits

from xai_onnx import InputError, Model, Occlusion, Saliency
from xai_onnx.evaluation import FaithfulnessEvaluator, kendall_tau, spearman

TEXTS = ["the movie very dull a", "a very good fun movie", "not fun bad movie"]


@pytest.fixture(scope="module")
def model(handmade):
    return Model(handmade[0])


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_spearman():
    assert spearman(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    # rho = 1 - 6 sum d^2 / (n (n^2 - 1)) with d = (0, 1, 1, 0)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([0.1, 0.3, 0.2, 0.4])) == pytest.approx(0.8)


def test_spearman_with_ties_uses_average_ranks():
    # textbook: ranks of x = [1, 2, 2, 3] are (1, 2.5, 2.5, 4); Pearson with (1, 2, 3, 4) is 4.5 / sqrt(4.5 * 5)
    x, y = np.array([1.0, 2, 2, 3]), np.array([1.0, 2, 3, 4])
    assert spearman(x, y) == pytest.approx(3 / math.sqrt(10))
    # swapping the tied pair's positions changes nothing (ordinal ranks in input order gave 1.0 one way, 0.8 the other)
    perm = np.array([0, 2, 1, 3])
    assert spearman(x[perm], y[perm]) == pytest.approx(spearman(x, y))
    from xai_onnx.evaluation import average_ranks

    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1, 3, 2, 3])), [4, 1, 4, 2, 4])
    assert math.isnan(spearman(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])))


def test_kendall_tau():
    assert kendall_tau(np.array([1, 2, 3]), np.array([10, 20, 30])) == 1.0
    assert kendall_tau(np.array([1, 2, 3]), np.array([3, 2, 1])) == -1.0
    assert abs(kendall_tau(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])) - 2 / 3) < 1e-12
    assert math.isnan(kendall_tau(np.array([1.0]), np.array([2.0])))


def test_values_match_direct_computation(model, handmade):
    params = handmade[1]
    text = TEXTS[0]
    ev = FaithfulnessEvaluator(model, fractions=(0.2, 0.6, 1.0), output="logit")
    occ = Occlusion(model, output="logit")
    report = ev.evaluate([text], {"occlusion": occ})
    # the exact ranking: occlusion on a linear logit equals each token's contribution
    ids = [2] + [VOCAB.index(w) for w in text.split()] + [3]
    target = int(np.argmax(reference_logits(params, ids)))
    scores = occ.explain([text])[0].scores[1:-1]
    order = list(np.argsort(-scores, kind="stable"))
    words = ids[1:-1]
    fx = reference_logits(params, ids)[target]

    def f(kept_positions):
        return reference_logits(params, [2] + [words[p] for p in sorted(kept_positions)] + [3])[target]

    n = len(words)
    comp = [fx - f(order[k:]) for k in (1, 3, 5)]  # ceil(0.2*5)=1, ceil(0.6*5)=3, 5
    suff = [fx - f(order[:k]) for k in (1, 3, 5)]
    aopc = sum(fx - f(order[k:]) for k in range(1, n + 1)) / (n + 1)
    m = report.methods[0]
    np.testing.assert_allclose(m.comprehensiveness, comp, atol=1e-5)
    np.testing.assert_allclose(m.sufficiency, suff, atol=1e-5)
    assert abs(m.aopc - aopc) < 1e-5 and abs(m.comprehensiveness_area - np.mean(comp)) < 1e-5
    assert m.tau_loo == pytest.approx(1.0)  # occlusion against itself
    assert abs(m.sufficiency[-1]) < 1e-6  # keeping every token changes nothing


def test_exact_ranking_beats_random_and_reversed(model):
    ev = FaithfulnessEvaluator(model, output="logit")
    occ = Occlusion(model, output="logit")

    class Reversed(Occlusion):
        def compute(self, items):
            return [type(c)(-c.scores) for c in super().compute(items)]

    report = ev.evaluate(TEXTS, {"exact": occ, "reversed": Reversed(model, output="logit")})
    exact, rev = report.methods
    assert exact.comprehensiveness_area > report.random.comprehensiveness_area > rev.comprehensiveness_area
    assert exact.aopc > report.random.aopc > rev.aopc
    assert rev.tau_loo == pytest.approx(-1.0)
    assert report.best() == "exact"


def test_random_reference_is_reproducible(model):
    sal = {"saliency": Saliency(model)}
    a = FaithfulnessEvaluator(model, random_state=7).evaluate(TEXTS, sal).random
    b = FaithfulnessEvaluator(model, random_state=7).evaluate(TEXTS, sal).random
    c = FaithfulnessEvaluator(model, random_state=8).evaluate(TEXTS, sal).random
    assert a == b and a != c


@pytest.mark.parametrize("removal", ["pad", "mask"])
def test_replacement_removal(model, handmade, removal):
    params = handmade[1]
    text = "a very good fun movie"
    report = FaithfulnessEvaluator(model, fractions=(1.0,), removal=removal, output="logit").evaluate(
        [text], {"occ": Occlusion(model, output="logit")})
    ids = [2] + [VOCAB.index(w) for w in text.split()] + [3]
    fill = VOCAB.index("[PAD]" if removal == "pad" else "[MASK]")
    target = int(np.argmax(reference_logits(params, ids)))
    expected = reference_logits(params, ids)[target] - reference_logits(params, [2] + [fill] * 5 + [3])[target]
    assert report.methods[0].comprehensiveness[0] == pytest.approx(expected, abs=1e-5)


def test_bad_input(model):
    with pytest.raises(InputError):
        FaithfulnessEvaluator(model, removal="erase")
    with pytest.raises(InputError):
        FaithfulnessEvaluator(model, fractions=(0.0, 0.5))
    with pytest.raises(InputError):
        FaithfulnessEvaluator(model).evaluate(["", "  "], {"s": Saliency(model)})
    with pytest.raises(InputError):
        FaithfulnessEvaluator(model).evaluate(TEXTS, {})
    with pytest.raises(InputError):
        FaithfulnessEvaluator(model, output="prob").evaluate(TEXTS, {"s": Saliency(model, output="logit")})


def test_cli_evaluate(handmade, tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("".join(f"1 {t}\n" for t in TEXTS), encoding="utf-8")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "xai_onnx.cli", "evaluate", str(handmade[0]), "--data", str(data),
                           "--methods", "ig,occlusion,fd", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "random" in proc.stdout and "occlusion" in proc.stdout
    rep = json.loads(out.read_text())
    assert [m["method"] for m in rep["methods"]] == ["ig", "occlusion", "fd"] and rep["settings"]["n_texts"] == 3


@pytest.mark.parametrize("removal", ["delete", "pad", "mask"])
def test_leave_one_out_follows_removal(model, handmade, removal):
    """tau(LOO) compares with leave-one-out done the evaluation's way: each token deleted (the sequence gets shorter)
    under ``delete``, replaced by [PAD] / [MASK] otherwise (occlusion with that baseline)."""
    params = handmade[1]
    ev = FaithfulnessEvaluator(model, output="logit", removal=removal)
    got = ev.leave_one_out(TEXTS)
    for text, scores in zip(TEXTS, got):
        words = [VOCAB.index(w) for w in text.split()]
        ids = [2, *words, 3]
        target = int(np.argmax(reference_logits(params, ids)))
        fx = reference_logits(params, ids)[target]
        fill = [] if removal == "delete" else [VOCAB.index(f"[{removal.upper()}]")]
        loo = [fx - reference_logits(params, [2, *words[:i], *fill, *words[i + 1:], 3])[target] for i in range(len(words))]
        np.testing.assert_allclose(scores, [0.0, *loo, 0.0], atol=1e-5)
        if removal != "delete":
            np.testing.assert_allclose(scores, Occlusion(model, output="logit", baseline=removal).explain([text])[0].scores,
                                       atol=1e-6)
    # and tau(LOO) is measured against exactly these scores
    occ = Occlusion(model, output="logit")
    tau = ev.evaluate(TEXTS[:1], {"occlusion": occ}).methods[0].tau_loo
    assert tau == pytest.approx(kendall_tau(occ.explain(TEXTS[:1])[0].scores[1:-1], got[0][1:-1]))


# ---- sentence pairs: only the chosen segment's tokens are ranked and removed -----------------------------------
@pytest.fixture(scope="module")
def pair_model(tmp_path_factory):
    """The handmade bundle with a pair template: [CLS] A [SEP] B [SEP]."""
    from handmade import build_with_pairs

    d = tmp_path_factory.mktemp("pairs") / "b"
    params = build_with_pairs(d)
    return Model(d), params, d


PAIRS = [("the movie very dull", "a good fun"), ("not fun", "bad movie very dull a")]  # no word twice: no tied LOO


@pytest.mark.parametrize("segment", ["text", "text_pair", "both"])
def test_pairs_remove_tokens_of_the_explained_segment_only(pair_model, segment):
    model, params, _ = pair_model
    ev = FaithfulnessEvaluator(model, fractions=(0.5, 1.0), output="logit", segment=segment)
    occ = Occlusion(model, output="logit")
    report = ev.evaluate(PAIRS, {"occlusion": occ})
    assert report.settings["segment"] == segment and report.settings["pairs"] and report.settings["n_texts"] == 2
    comp, suff, taus = [], [], []
    for (a, b), attr in zip(PAIRS, occ.explain(PAIRS)):
        wa, wb = [VOCAB.index(w) for w in a.split()], [VOCAB.index(w) for w in b.split()]
        ids = [2, *wa, 3, *wb, 3]
        sep = len(wa) + 1
        # the ranked positions: the chosen text's tokens, never [CLS] or either [SEP]
        pos = {"text": list(range(1, sep)), "text_pair": list(range(sep + 1, len(ids) - 1)),
               "both": [*range(1, sep), *range(sep + 1, len(ids) - 1)]}[segment]
        target = int(np.argmax(reference_logits(params, ids)))
        fx = reference_logits(params, ids)[target]
        order = [pos[j] for j in np.argsort(-np.asarray(attr.scores)[pos], kind="stable")]

        def f(removed, ids=ids, target=target):
            return reference_logits(params, [t for i, t in enumerate(ids) if i not in set(removed)])[target]

        n = len(pos)
        ks = [math.ceil(0.5 * n), n]
        comp.append([fx - f(order[:k]) for k in ks])
        suff.append([fx - f(order[k:]) for k in ks])
        loo = [fx - f([p]) for p in pos]
        taus.append(kendall_tau(np.asarray(attr.scores)[pos], np.asarray(loo)))
    m = report.methods[0]
    np.testing.assert_allclose(m.comprehensiveness, np.mean(comp, axis=0), atol=1e-5)
    np.testing.assert_allclose(m.sufficiency, np.mean(suff, axis=0), atol=1e-5)
    assert m.tau_loo == pytest.approx(np.mean(taus))
    assert "stays whole" in report.settings["definitions"]["segment"] or segment == "both"


def test_pairs_word_granularity_and_leave_one_out(pair_model):
    model, params, _ = pair_model
    ev = FaithfulnessEvaluator(model, output="logit", segment="text_pair", granularity="word")
    r = ev.evaluate([p[0] for p in PAIRS], {"occlusion": Occlusion(model, output="logit")},
                    text_pairs=[p[1] for p in PAIRS])
    assert r.methods[0].n_texts == 2 and r.settings["granularity"] == "word"
    # every word is one token here, so word level equals token level
    tok = FaithfulnessEvaluator(model, output="logit", segment="text_pair").evaluate(
        PAIRS, {"occlusion": Occlusion(model, output="logit")})
    np.testing.assert_allclose(r.methods[0].comprehensiveness, tok.methods[0].comprehensiveness, atol=1e-6)
    loo = FaithfulnessEvaluator(model, output="logit", segment="text").leave_one_out(PAIRS)
    assert loo[0][0] == 0 and loo[0][5] == 0 and np.all(loo[0][6:] == 0) and np.any(loo[0][1:5] != 0)


def test_pairs_bad_input(pair_model, model):
    pm = pair_model[0]
    with pytest.raises(InputError, match="segment must be one of"):
        FaithfulnessEvaluator(pm, segment="second")
    with pytest.raises(InputError, match="needs sentence pairs"):
        FaithfulnessEvaluator(pm, segment="text_pair").evaluate(["good movie"], {"s": Saliency(pm)})
    with pytest.raises(InputError, match="no text with a token to remove in the chosen segment"):
        FaithfulnessEvaluator(pm, segment="text_pair").evaluate([("good movie", "")], {"s": Saliency(pm)})


def test_cli_evaluate_on_pairs(pair_model, tmp_path):
    from inprocess import run_cli

    d = pair_model[2]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"text": a, "text_pair": b, "label": 1}) + "\n" for a, b in PAIRS))
    out = tmp_path / "r.json"
    proc = run_cli("evaluate", str(d), "--data", str(data), "--methods", "occlusion", "--segment", "text_pair",
                   "--output", "logit", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    model = pair_model[0]
    direct = FaithfulnessEvaluator(model, output="logit", segment="text_pair").evaluate(
        PAIRS, {"occlusion": Occlusion(model, output="logit")})
    np.testing.assert_allclose(rep["methods"][0]["comprehensiveness"], direct.methods[0].comprehensiveness, atol=1e-7)
    data.write_text(json.dumps({"text": "good", "text_pair": "bad"}) + "\n" + json.dumps({"text": "fun"}) + "\n")
    proc = run_cli("evaluate", str(d), "--data", str(data), "--methods", "occlusion", "--quiet")
    assert proc.returncode == 2 and "text_pair" in proc.stderr and "Traceback" not in proc.stderr
