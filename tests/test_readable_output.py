"""What the pictures, reports and text outputs say: honest palettes, names, counts, headers, and warnings."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from inprocess import run_cli

from xai_onnx import IntegratedGradients, Model, Occlusion, Saliency
from xai_onnx.html import MAGNITUDE, NEGATIVE, POSITIVE, render
from xai_onnx.methods.integrated_gradients import DELTA_WARN_FLOOR, DELTA_WARN_FRACTION
from xai_onnx.report import class_words, words

TEXTS = ["a very good fun movie", "the movie very dull a", "not fun bad movie"]


def cli(*args: str):
    return run_cli(*args)


@pytest.fixture(scope="module")
def model(handmade):
    return Model(handmade[0])


def _backgrounds(page: str, method: str) -> list[tuple[int, int, int]]:
    row = page.split(f'data-method="{method}"', 1)[1].split("</tr>", 1)[0]
    return [tuple(int(v) for v in m) for m in re.findall(r"background:rgb\((\d+),(\d+),(\d+)\)", row)]


def _on_scale(rgb: tuple[int, int, int], end: tuple[int, int, int]) -> bool:
    """rgb lies on the straight line from white to ``end`` (rounding aside)."""
    a = [(255 - c) / (255 - e) for c, e in zip(rgb, end)]
    return max(a) - min(a) < 0.02


def test_unsigned_saliency_is_painted_one_way(model):
    sal = Saliency(model).explain(TEXTS[:1], target="all")
    ig = IntegratedGradients(model).explain(TEXTS[:1], target="all")
    page = render([*sal, *ig])
    assert "bar mag" in page and "a magnitude without a sign" in page  # the legend says so
    for card in page.split('class="card"')[1:]:
        sal_colours = _backgrounds(card, "saliency")
        assert sal_colours and all(_on_scale(c, MAGNITUDE) for c in sal_colours)
        assert not any(_on_scale(c, POSITIVE) and c != (255, 255, 255) for c in sal_colours)
        ig_colours = [c for c in _backgrounds(card, "ig") if c != (255, 255, 255)]
        assert all(_on_scale(c, POSITIVE) or _on_scale(c, NEGATIVE) for c in ig_colours)


def test_html_header_counts_texts_and_title_names_the_model(handmade):
    proc = cli("explain", str(handmade[0]), "--text", *TEXTS, "--method", "occlusion", "--target", "all",
               "--format", "html")
    assert proc.returncode == 0, proc.stderr
    page = proc.stdout
    assert "3 text(s), 9 (text, target) pair(s), 9 explanation(s)" in page
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert handmade[0].name in title and "+" not in title  # the bundle's name, not "BertModel+mean-pooling+..."


def test_class_words_are_whole_words_without_punctuation_or_stop_words():
    text = "the film is boring , bored ."
    # word pieces as a WordPiece tokenizer gives them: "bor" + "##ing", "bor" + "##ed"
    pieces = [(0, 0), (0, 3), (4, 8), (9, 11), (12, 15), (15, 18), (19, 20), (21, 24), (24, 26), (27, 28), (0, 0)]
    scores = np.array([0, 0.5, 0.1, 0.5, 0.2, 0.3, 0.9, 0.1, 0.2, 0.9, 0])
    r = SimpleNamespace(text=text, offsets=pieces, scores=scores, target=SimpleNamespace(label="neg"))
    got = dict(words(r))
    assert set(got) == {"the", "film", "is", "boring", ",", "bored", "."}
    assert got["boring"] == pytest.approx(0.5) and got["bored"] == pytest.approx(0.3)
    default = {row["word"] for row in class_words([r], ["neg"], min_count=1)["neg"]}
    assert default == {"film", "boring", "bored"}
    kept = {row["word"] for row in class_words([r], ["neg"], min_count=1, keep_stop_words=True)["neg"]}
    assert kept == set(got)
    # a word that pushes away from the class on average is not one of its words; "as" and "would" are stop words
    other = SimpleNamespace(text="as it would film", offsets=[(0, 2), (3, 5), (6, 11), (12, 16)],
                            scores=np.array([0.9, 0.1, 0.8, -1.0]), target=SimpleNamespace(label="neg"))
    rows = class_words([r, other], ["neg"], min_count=1)["neg"]
    assert {row["word"] for row in rows} == {"boring", "bored"}  # film: (0.1 - 1.0) / 2 < 0
    assert all(row["mean_score"] > 0 for row in rows)


def test_report_html_is_a_page_a_person_reads(handmade, tmp_path):
    data = tmp_path / "d.jsonl"
    texts = ["good movie", "bad movie", "not fun", "very good", "dull", "fun movie", "good", "bad"]
    labels = ["positive", "negative", "negative", "positive", "negative", "positive", "negative", "positive"]
    data.write_text("".join(json.dumps({"id": f"x{i}", "text": t, "label": lab}) + "\n"
                            for i, (t, lab) in enumerate(zip(texts, labels))))
    proc = cli("report", str(handmade[0]), "--data", str(data), "--train", str(data), "--out", str(tmp_path / "r"),
               "--format", "html")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert "<script" not in page and "http" not in page
    for section in ("Accuracy", "Confusion", "The worst errors", "Words that push towards each class",
                    "Prototypes and criticisms", "self-influential"):
        assert section in page
    assert f"{rep['accuracy']:.1%}" in page
    errors = rep["misclassified"]
    assert errors, "the data holds deliberate errors"
    assert page.count('class="card error"') == min(10, len(errors))
    probs = [m["probabilities"][m["label"]] for m in errors]
    assert probs == sorted(probs, reverse=True)  # the worst (most confident) errors first
    assert all(m["row"] == int(m["id"][1:]) + 1 for m in errors)  # joined back to the input
    assert f'row {errors[0]["row"]}, id {errors[0]["id"]}' in page and 'class="tok' in page


def test_influence_text_has_a_header_and_the_training_index(handmade, tmp_path):
    train = tmp_path / "t.jsonl"
    train.write_text('{"text": "good movie", "label": "positive"}\n{"text": "bad", "label": "negative"}\n'
                     '{"text": "dull movie", "label": "negative"}\n')
    proc = cli("influence", str(handmade[0]), "--train", str(train), "--text", "fun", "--k", "1", "--format", "text")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# TracIn") and "A positive score supports the prediction" in proc.stdout
    assert "  proponents (highest scores):" in proc.stdout and "  opponents (lowest scores):" in proc.stdout
    js = json.loads(cli("influence", str(handmade[0]), "--train", str(train), "--text", "fun", "--k", "1").stdout)
    top = js["results"][0]["proponents"][0]
    assert f"    {top['score']:+.4f} #{top['index']} line {top['train_row']} [{top['label']}] {top['text']}" in proc.stdout


def test_attack_names_the_original_labels_probability(handmade):
    proc = cli("attack", str(handmade[0]), "--text", "good movie", "--max-flips", "1")
    r = json.loads(proc.stdout)["results"][0]
    assert "probability_after" not in r and 0 <= r["label_before_probability_after"] <= 1
    text = cli("attack", str(handmade[0]), "--text", "good movie", "--max-flips", "1", "--format", "text").stdout
    assert "ORIGINAL label's probability" in text and f"p({r['label_before']})" in text


def test_large_convergence_delta_warns(model, handmade):
    coarse = IntegratedGradients(model, n_steps=2, method="riemann_left").explain(TEXTS, target="all")
    fine = IntegratedGradients(model, n_steps=64).explain(TEXTS, target="all")
    warned = 0
    for r in [*coarse, *fine]:
        gap = abs(r.output_value - r.baseline_value)
        large = abs(r.convergence_delta) > max(DELTA_WARN_FRACTION * gap, DELTA_WARN_FLOOR)
        assert any(w.startswith("convergence delta") for w in r.warnings) == large
        warned += large
    assert warned > 0 and not any(w.startswith("convergence delta") for r in fine for w in r.warnings)
    proc = cli("explain", str(handmade[0]), "--text", *TEXTS, "--method", "ig", "--steps", "2",
               "--integration", "riemann_left")
    assert proc.returncode == 0 and "convergence delta over 5%" in proc.stderr
    assert Occlusion(model).explain(TEXTS[:1])[0].warnings == ()
