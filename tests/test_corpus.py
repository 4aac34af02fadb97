"""Corpus input and output as a new user meets them: results join back to input rows, ids, gold labels and other
fields; JSONL split on newline only; format by extension or --input-format; outputs checked before the work."""

from __future__ import annotations

import json

import pytest
from inprocess import run_cli

from xai_onnx import Model
from xai_onnx.influence import InfluenceIndex
from xai_onnx.io import read_labelled, read_records, read_texts

# JSON allows these raw inside strings; str.splitlines() splits on every one of them
SEPARATORS = ["\u2028", "\u2029", "\x0c", "\x85", "\x1c", "\x1d", "\x1e", "\x0b"]


def cli(*args: str):
    return run_cli(*args)


def test_jsonl_is_split_on_newline_only(tmp_path):
    texts = [f"good{sep}movie" for sep in SEPARATORS]
    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert read_texts(f) == texts
    assert [r.row for r in read_records(f)] == list(range(1, len(texts) + 1))
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(b'{"text": "a"}\r\n{"text": "b"}\r\n')
    assert read_texts(crlf) == ["a", "b"]


def test_influence_index_round_trip_with_line_separators(handmade, tmp_path):
    model = Model(handmade[0])
    texts = [f"good{sep}movie" for sep in SEPARATORS] + ["bad movie"]
    labels = ["positive"] * len(SEPARATORS) + ["negative"]
    InfluenceIndex(model, k=2).fit(texts, labels).save(tmp_path / "idx")
    loaded = InfluenceIndex.load(model, tmp_path / "idx")
    assert loaded.texts_ == texts and len(loaded.labels_) == len(texts)


def test_format_by_extension_or_option_never_by_content(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text('{"text": "x"} is how JSON looks\nplain\n', encoding="utf-8")
    assert read_texts(f) == ['{"text": "x"} is how JSON looks', "plain"]
    g = tmp_path / "data.txt"
    g.write_text('{"text": "x", "label": "positive"}\n', encoding="utf-8")
    assert read_texts(g, "jsonl") == ["x"] and read_labelled(g, "jsonl") == [("x", "positive")]
    with pytest.raises(ValueError, match="--input-format jsonl"):  # the SST-2 default says what it looks like
        read_labelled(g)
    c = tmp_path / "in.csv"
    c.write_text('id,text,label\n7,"two\nlines",1\n\n8,plain,0\n', encoding="utf-8")
    recs = read_records(c)
    assert [(r.row, r.id, r.text, r.gold_label) for r in recs] == [(2, "7", "two\nlines", "1"), (5, "8", "plain", "0")]
    assert recs.skipped_rows == (4,)


def test_dev_null_is_an_empty_input_not_a_missing_file(handmade):
    assert read_texts("/dev/null") == []
    proc = cli("predict", str(handmade[0]), "--input", "/dev/null")
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"results": []}, proc.stderr
    assert "not found" not in proc.stderr and "holds no texts" in proc.stderr


def test_results_join_back_to_the_input(handmade, tmp_path):
    f = tmp_path / "in.jsonl"
    rows = [{"id": "a1", "text": "good movie", "label": "negative", "source": "web"}, None,
            {"id": 2, "text": "not fun", "lang": "en"}, {"text": "bad"}]
    f.write_text("".join((json.dumps(r) if r else "") + "\n" for r in rows), encoding="utf-8")
    proc = cli("explain", str(handmade[0]), "--input", str(f), "--method", "occlusion", "--target", "all")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 blank line" in proc.stderr and "line 2" in proc.stderr
    res = json.loads(proc.stdout)["results"]
    assert len(res) == 3 * 3  # every class of every text
    first = res[0]
    assert (first["row"], first["id"], first["gold_label"], first["input"]) == (1, "a1", "negative", {"source": "web"})
    assert first["label"] in ("negative", "neutral", "positive")  # the prediction, beside the gold label
    assert [r["row"] for r in res] == [1, 1, 1, 3, 3, 3, 4, 4, 4]
    assert res[3]["id"] == 2 and res[3]["input"] == {"lang": "en"} and "gold_label" not in res[3]
    assert "id" not in res[6] and "input" not in res[6]
    proc = cli("explain", str(handmade[0]), "--input", str(f), "--method", "fd", "--format", "jsonl", "--limit", "2")
    lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert [(r["row"], r.get("id")) for r in lines] == [(1, "a1"), (3, 2)]
    assert "line 2" in proc.stderr
    proc = cli("explain", str(handmade[0]), "--input", str(f), "--method", "fd", "--format", "jsonl", "--limit", "1")
    assert "blank" not in proc.stderr  # the blank line 2 lies past the one row kept
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "good movie", "label": "positive"}\n{"text": "bad", "label": "negative"}\n')
    for cmd in (("predict",), ("attack", "--max-flips", "1"), ("influence", "--train", str(train), "--k", "1")):
        proc = cli(cmd[0], str(handmade[0]), "--input", str(f), *cmd[1:], "--input-format", "jsonl")
        assert proc.returncode == 0, (cmd, proc.stderr)
        assert [r["row"] for r in json.loads(proc.stdout)["results"]] == [1, 3, 4], cmd
    # influence names each training example by its line in --train (blank lines counted) and its id
    train.write_text('{"text": "good movie", "label": "positive", "id": "t1"}\n\n{"text": "bad", "label": "negative"}\n')
    proc = cli("influence", str(handmade[0]), "--text", "good", "--train", str(train), "--k", "1")
    (r,) = json.loads(proc.stdout)["results"]
    by_text = {n["text"]: n for n in r["proponents"] + r["opponents"]}
    assert by_text["good movie"]["train_row"] == 1 and by_text["good movie"]["train_id"] == "t1"
    assert by_text["bad"]["train_row"] == 3 and "train_id" not in by_text["bad"]
    text = cli("influence", str(handmade[0]), "--text", "good", "--train", str(train), "--k", "1", "--format", "text")
    assert "#0 line 1 id t1 [positive] good movie" in text.stdout and "#1 line 3 [negative] bad" in text.stdout


def test_limit_on_every_corpus_command(handmade, tmp_path):
    data = tmp_path / "d.jsonl"
    texts = ["good movie", "bad movie", "not fun", "very good", "dull", "fun movie"]
    labels = ["positive", "negative", "negative", "positive", "negative", "positive"]
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(texts, labels)))
    b = str(handmade[0])
    out = json.loads(cli("influence", b, "--train", str(data), "--input", str(data), "--limit", "2").stdout)
    assert len(out["results"]) == 2
    out = json.loads(cli("prototypes", b, "--data", str(data), "--limit", "3", "--n-prototypes", "1",
                         "--n-criticisms", "1").stdout)
    assert all(row <= 3 for g in out["groups"] for row in g["prototype_rows"] + g["criticism_rows"])
    proc = cli("report", b, "--data", str(data), "--limit", "4", "--out", str(tmp_path / "r"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r" / "report.json").read_text())["n"] == 4
    out = json.loads(cli("evaluate", b, "--data", str(data), "--limit", "3", "--methods", "occlusion",
                         "--format", "json").stdout)
    assert out["settings"]["n_texts"] == 3
    proc = cli("explain", b, "--text", "good", "--method", "fd", "--limit", "0")
    assert proc.returncode == 2 and "--limit" in proc.stderr


def test_outputs_are_checked_before_the_work(handmade, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "good movie", "label": "positive"}\n')
    existing = tmp_path / "taken.txt"
    existing.write_text("mine")
    proc = cli("report", str(handmade[0]), "--data", str(data), "--out", str(existing))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
    assert "explaining" not in proc.stderr and existing.read_text() == "mine"  # refused before any work
    proc = cli("evaluate", str(handmade[0]), "--data", str(data), "--out", str(tmp_path), "--methods", "fd")
    assert proc.returncode == 2 and "is a directory" in proc.stderr
