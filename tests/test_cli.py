"""The CLI as a user meets it: JSON schema, input files, and errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from xai_onnx import IntegratedGradients, Model


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xai_onnx.cli", *args], capture_output=True, text=True, timeout=300)


def test_predict_json(handmade):
    proc = cli("predict", str(handmade[0]), "--text", "good movie", "bad")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [r["text"] for r in out["results"]] == ["good movie", "bad"]
    assert set(out["results"][0]["probabilities"]) == {"negative", "neutral", "positive"}


def test_explain_json_schema_matches_library(handmade):
    proc = cli("explain", str(handmade[0]), "--text", "good movie", "not fun", "--method", "ig", "--steps", "20",
               "--integration", "riemann_middle", "--target", "positive")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["method"] == "ig" and len(out["results"]) == 2
    r = out["results"][0]
    for key in ("text", "label", "target", "probabilities", "tokens", "offsets", "scores", "convergence_delta"):
        assert key in r
    assert r["target"] == {"index": 2, "label": "positive"}
    lib = IntegratedGradients(Model(handmade[0]), n_steps=20, method="riemann_middle").explain(["good movie"], target=2)[0]
    np.testing.assert_allclose(r["scores"], lib.scores, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["ig", "saliency", "grad_x_input", "occlusion", "fd"])
def test_every_method_text_format(handmade, method):
    proc = cli("explain", str(handmade[0]), "--text", "good movie", "--method", method, "--format", "text")
    assert proc.returncode == 0, proc.stderr
    assert "[CLS]" in proc.stdout and "good" in proc.stdout


def test_input_files(handmade, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("good movie\n\nnot fun\n", encoding="utf-8")
    jl = tmp_path / "in.jsonl"
    jl.write_text('{"text": "good movie"}\n{"text": "not fun", "id": 3}\n', encoding="utf-8")
    outs = []
    for f in (txt, jl):
        proc = cli("explain", str(handmade[0]), "--input", str(f), "--method", "occlusion")
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(proc.stdout))
    assert [r["text"] for r in outs[0]["results"]] == ["good movie", "not fun"]
    assert outs[0]["results"] == outs[1]["results"]


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and needle in proc.stderr
    assert proc.stdout == ""


def test_errors_are_one_line(handmade, handmade_forward_only, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    _one_line_error(cli("explain", str(handmade[0]), "--input", str(bad), "--method", "ig"), "not UTF-8")
    _one_line_error(cli("explain", str(handmade[0]), "--text", "x", "--method", "ig", "--target", "happy"), "unknown label")
    _one_line_error(cli("explain", str(tmp_path / "nope"), "--text", "x", "--method", "ig"), "not found")
    _one_line_error(cli("explain", str(handmade_forward_only), "--text", "x", "--method", "saliency"), "re-export")
    _one_line_error(cli("explain", str(handmade[0]), "--input", str(tmp_path / "missing.txt"), "--method", "fd"), "not found")
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"txt": "x"}\n')
    _one_line_error(cli("explain", str(handmade[0]), "--input", str(jl), "--method", "fd"), '"text"')


def test_empty_and_long_texts_in_one_batch(handmade):
    proc = cli("explain", str(handmade[0]), "--text", "", " ".join(["good"] * 50), "bad", "--method", "fd")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)["results"]
    assert len(res) == 3 and res[0]["warnings"] and res[1]["truncated"] and not res[2]["warnings"]
    assert "truncated" in proc.stderr


def test_jsonl_streams_one_result_a_line(handmade, tmp_path):
    data = tmp_path / "in.txt"
    data.write_text("\n".join(["good movie", "not fun", "bad"] * 15), encoding="utf-8")  # 45 texts: two chunks
    proc = cli("explain", str(handmade[0]), "--input", str(data), "--method", "fd", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert len(lines) == 45 and all(ln["method"] == "fd" and "scores" in ln for ln in lines)
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal


def test_progress_bar_on_a_terminal(handmade, tmp_path):
    import io

    from xai_onnx.progress import Progress

    stream = io.StringIO()
    bar = Progress(4, "explain", enabled=True, stream=stream)
    for _ in range(4):
        bar.update()
    bar.close()
    assert "4/4" in stream.getvalue() and stream.getvalue().endswith("\n")
