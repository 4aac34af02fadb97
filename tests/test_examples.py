"""Adversarial examples, influence, prototypes and the debugging report, on cases whose answers are known."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from handmade import VOCAB, reference_logits

from xai_onnx import GradientUnavailableError, InputError, Model
from xai_onnx.adversarial import GreedySubstitution, HotFlip
from xai_onnx.influence import InfluenceIndex
from xai_onnx.prototypes import MMDCritic, median_heuristic
from xai_onnx.report import debug_report

WORDS = [w for w in VOCAB if not w.startswith("[")]
TRAIN = ["good movie", "good fun", "very good", "bad movie", "dull movie", "not fun", "the dull", "a bad", "fun fun",
         "movie"]


def ids_of(text):
    return [2] + [VOCAB.index(w) for w in text.split()] + [3]


def one_flip_exists(params, text):
    ids = ids_of(text)
    label = int(np.argmax(reference_logits(params, ids)))
    for pos, w in itertools.product(range(1, len(ids) - 1), WORDS):
        new = list(ids)
        new[pos] = VOCAB.index(w)
        if new != ids and int(np.argmax(reference_logits(params, new))) != label:
            return True
    return False


@pytest.fixture(scope="module")
def model(handmade):
    return Model(handmade[0])


@pytest.fixture(scope="module")
def flippable(handmade):
    params = handmade[1]
    texts = [" ".join(c) for n in (2, 3) for c in itertools.product(["good", "bad", "movie", "fun", "dull"], repeat=n)]
    found = [t for t in texts if one_flip_exists(params, t)]
    assert found, "the handmade model must have a text that one substitution flips"
    return found[:4]


@pytest.mark.parametrize("attack_cls", [HotFlip, GreedySubstitution])
def test_attack_finds_the_flip(model, handmade, flippable, attack_cls):
    params = handmade[1]
    attacker = attack_cls(model, max_flips=1, whole_words=True)
    for text, r in zip(flippable, attacker.attack(flippable)):
        assert r.success, r
        assert len(r.flips) == 1 and r.flips[0].position not in (0, len(ids_of(text)) - 1)
        new_ids = ids_of(r.adversarial_text)
        assert model.labels[int(np.argmax(reference_logits(params, new_ids)))] == r.label_after != r.label_before
        assert r.queries > 1 and r.seconds >= 0


def test_attack_constraints(model, flippable):
    text = flippable[0]
    n = len(text.split())
    r = HotFlip(model, max_flips=3, protected=list(range(1, n + 1))).attack([text])[0]
    assert not r.flips and not r.success and r.adversarial_text == text
    r = HotFlip(model, max_flips=2, keep_stop_words=True).attack(["the very a"])[0]
    assert not r.flips
    r = HotFlip(model, max_flips=2, min_similarity=0.999).attack([text])[0]
    assert not r.flips  # nothing in this vocabulary is that close
    with pytest.raises(InputError):
        HotFlip(model, max_flips=0)


def test_greedy_works_without_gradient(handmade_forward_only, flippable):
    m = Model(handmade_forward_only)
    with pytest.raises(GradientUnavailableError, match="re-export"):
        HotFlip(m)
    assert GreedySubstitution(m, max_flips=1).attack(flippable[:1])[0].success


# ---- influence -----------------------------------------------------------------------------------------------
def train_labels(model):
    return [p.label for p in model.predict(TRAIN)][:5] + ["negative", "neutral", "positive", "negative", "positive"]


def test_influence_scores_follow_from_features(model):
    labels = train_labels(model)
    idx = InfluenceIndex(model, k=3).fit(TRAIN, labels)
    test = ["good fun movie", "dull"]
    logits, feats = model.forward_encoded(model.encode(test))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = p - np.eye(3)[p.argmax(1)]
    tr_logits, tr_feats = model.forward_encoded(model.encode(TRAIN))
    pt = np.exp(tr_logits - tr_logits.max(1, keepdims=True))
    pt /= pt.sum(1, keepdims=True)
    y = np.array([model.labels.index(lab) for lab in labels])
    r = pt - np.eye(3)[y]
    # the explicit outer-product gradients of the head, flattened, dotted
    g_test = np.concatenate([np.einsum("ic,id->icd", q, feats).reshape(2, -1), q], 1)
    g_train = np.concatenate([np.einsum("ic,id->icd", r, tr_feats).reshape(len(TRAIN), -1), r], 1)
    expected = g_test @ g_train.T
    np.testing.assert_allclose(idx.scores(test), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(idx.self_influence(), (g_train * g_train).sum(1), rtol=1e-4)
    res = idx.query(test)
    for row, rr in zip(expected, res):
        assert [n.index for n in rr.proponents] == list(np.argsort(-row, kind="stable")[:3])
        assert [n.index for n in rr.opponents] == list(np.argsort(row, kind="stable")[:3])


def test_influence_save_load_knn_and_bad_input(model, tmp_path):
    labels = train_labels(model)
    idx = InfluenceIndex(model).fit(TRAIN, labels)
    idx.save(tmp_path / "idx")
    again = InfluenceIndex.load(model, tmp_path / "idx")
    np.testing.assert_array_equal(again.scores(["good"]), idx.scores(["good"]))
    knn = idx.query(["good movie"], mode="knn", k=1)[0]
    assert knn.proponents[0].text == "good movie" and knn.proponents[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(idx.query(["good"], k=50)[0].proponents) == len(TRAIN)  # k larger than the set
    with pytest.raises(InputError, match="empty"):
        InfluenceIndex(model).fit([], [])
    with pytest.raises(InputError, match="not one of"):
        InfluenceIndex(model).fit(["good"], ["happy"])
    with pytest.raises(InputError):
        InfluenceIndex(model).fit(["good", "bad"], ["positive"])
    one_class = InfluenceIndex(model).fit(["good", "bad"], ["positive", "positive"])
    assert one_class.self_influence().shape == (2,)


def test_self_influence_finds_flipped_labels(model):
    texts = [" ".join(c) for c in itertools.product(["good", "bad", "movie", "fun", "dull", "very"], repeat=2)]
    preds = [p.target.index for p in model.predict(texts)]
    flipped = list(range(0, len(texts), 6))
    labels = [(p + 1) % 3 if i in flipped else p for i, p in enumerate(preds)]
    si = InfluenceIndex(model).fit(texts, labels).self_influence()
    top = set(np.argsort(-si)[:len(flipped)])
    assert len(top & set(flipped)) / len(flipped) >= 0.8


# ---- prototypes ----------------------------------------------------------------------------------------------
def clusters(seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [10, 0], [0, 10]], float)
    small = np.array([10.0, 10.0]) + rng.normal(scale=0.5, size=(12, 2))  # a group too small for a prototype
    x = np.concatenate([c + rng.normal(scale=0.5, size=(40, 2)) for c in centres] + [small])
    y = np.array([0] * 40 + [1] * 40 + [2] * 40 + [0] * 12)
    return x, y


def test_one_prototype_per_cluster_and_the_unrepresented_group_is_criticised():
    x, y = clusters()
    critic = MMDCritic(n_prototypes=3, n_criticisms=2, per_class=False, sigma=2.0).fit(x)
    assert sorted(int(i) // 40 for i in critic.prototypes_) == [0, 1, 2]
    assert critic.criticisms_[0] >= 120  # the strongest witness lies in the group no prototype covers
    assert critic.criticisms_[1] < 120  # the log-determinant term sends the next one elsewhere (diversity)
    again = MMDCritic(n_prototypes=3, n_criticisms=1, per_class=False, sigma=2.0).fit(x)
    np.testing.assert_array_equal(again.prototypes_, critic.prototypes_)


def test_per_class_and_median_heuristic():
    x, y = clusters()
    critic = MMDCritic(n_prototypes=2, n_criticisms=1).fit(x, y, ["a", "b", "c"])
    assert [g.label for g in critic.groups_] == ["a", "b", "c"]
    for g, c in zip(critic.groups_, range(3)):
        assert all(y[i] == c for i in g.prototypes + g.criticisms) and g.sigma > 0
    assert 0 < median_heuristic(x) < 20
    big = MMDCritic(n_prototypes=500, n_criticisms=500, per_class=False).fit(x[:5])
    assert len(big.prototypes_) == 5 and len(big.criticisms_) == 0  # more asked than there are
    with pytest.raises(InputError):
        MMDCritic(n_prototypes=0)
    with pytest.raises(InputError):
        MMDCritic().fit(np.zeros((0, 2)), [])


# ---- report and CLI ------------------------------------------------------------------------------------------
def test_debug_report(model):
    labels = train_labels(model)
    rep = debug_report(model, TRAIN, labels, train=(TRAIN, labels), min_count=1, n_prototypes=1, n_criticisms=1, k=2)
    preds = [p.label for p in model.predict(TRAIN)]
    assert rep["accuracy"] == pytest.approx(np.mean([a == b for a, b in zip(preds, labels)]))
    assert len(rep["misclassified"]) == sum(a != b for a, b in zip(preds, labels))
    assert set(rep["class_words"]) == set(model.labels)
    assert all("evidence" in m for m in rep["misclassified"][:5])
    assert rep["prototypes"] and rep["self_influence_top"]
    json.dumps(rep)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "xai_onnx.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_commands(handmade, tmp_path, flippable):
    b = str(handmade[0])
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in
                             zip(TRAIN, ["positive", "neutral", "positive", "negative", "negative", "negative", "negative",
                                         "negative", "positive", "neutral"])))
    proc = cli("attack", b, "--text", *flippable[:2], "--max-flips", "1")
    assert proc.returncode == 0, proc.stderr
    assert all(isinstance(r["success"], bool) for r in json.loads(proc.stdout)["results"])
    proc = cli("influence", b, "--train", str(train), "--text", "good", "--k", "2", "--index", str(tmp_path / "idx"))
    assert proc.returncode == 0 and len(json.loads(proc.stdout)["results"][0]["proponents"]) == 2, proc.stderr
    proc = cli("influence", b, "--index", str(tmp_path / "idx"), "--text", "good", "--k", "2", "--mode", "knn")
    assert proc.returncode == 0, proc.stderr
    proc = cli("prototypes", b, "--data", str(train), "--per-class", "--n-prototypes", "1", "--n-criticisms", "1")
    assert proc.returncode == 0 and len(json.loads(proc.stdout)["groups"]) == 3, proc.stderr
    proc = cli("report", b, "--data", str(train), "--train", str(train), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0 and (tmp_path / "rep" / "report.json").is_file(), proc.stderr
    (tmp_path / "empty.txt").write_text("")
    for args in (("influence", b, "--train", str(tmp_path / "empty.txt"), "--text", "x"),
                 ("report", b, "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "r2")),
                 ("prototypes", b, "--data", str(tmp_path / "empty.txt"))):
        proc = cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
