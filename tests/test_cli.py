"""The CLI as a user meets it: JSON schema, input files, and errors without tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from inprocess import run_cli

from xai_onnx import IntegratedGradients, Model


def cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (an interpreter start-up per call made these tests slow); test_predict_json runs the
    real `python -m xai_onnx.cli`."""
    return run_cli(*args)


def test_predict_json(handmade):
    proc = subprocess.run([sys.executable, "-m", "xai_onnx.cli", "predict", str(handmade[0]), "--text", "good movie", "bad"],
                          capture_output=True, text=True, timeout=300)
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
    assert [r.pop("row") for r in outs[0]["results"]] == [1, 3]  # line numbers: the blank line 2 is counted
    assert [r.pop("row") for r in outs[1]["results"]] == [1, 2]
    assert outs[1]["results"][1].pop("id") == 3
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


def test_a_file_given_as_the_bundle_says_what_a_bundle_is(handmade, tmp_path):
    proc = cli("predict", str(handmade[0] / "forward.onnx"), "--text", "good")
    _one_line_error(proc, "is a file, not a bundle")
    assert "give that directory" in proc.stderr and str(handmade[0]) in proc.stderr
    lone = tmp_path / "model.onnx"
    lone.write_bytes((handmade[0] / "forward.onnx").read_bytes())
    proc = cli("predict", str(lone), "--text", "good")
    _one_line_error(proc, "is a file, not a bundle")
    assert "xai-onnx export MODEL_DIR BUNDLE_DIR" in proc.stderr and "not found" not in proc.stderr


def test_serve_checks_its_extra_before_announcing(handmade, monkeypatch, capsys):
    import importlib.util

    from xai_onnx.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", str(handmade[0]), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "serving" not in err and "uvicorn missing" in err
    assert "pip install 'xai-onnx[serve]'" in err and "pip install '.[serve]'" in err  # the README's form too


def test_export_progress_and_summary_without_torch(handmade, monkeypatch, capsys):
    """The export command's stage log, its summary in words and --format json, with export_bundle replaced by a
    stand-in that reports the stages the real one does (tests/test_export.py runs the real one, marked slow)."""
    import io

    exporters_cli = pytest.importorskip("xai_onnx_exporters.cli")
    from xai_onnx.manifest import Manifest
    from xai_onnx.progress import Stages

    manifest = Manifest.load(handmade[0])
    manifest = type(manifest)(**{**manifest.__dict__, "validation": {
        "tolerance": 1e-4, "shapes": [[1, 1], [2, 5]], "max_relative_error": {"logits": 2e-6, "grad_prob": 3e-6}}})

    def fake_export(source, out_dir, *, progress=None, **_):
        for stage, detail in (("load", f"reading {source}"), ("trace", "gradient graph"), ("convert", "gradient graph"),
                              ("validate", "shape 1 x 1: largest relative error 2.0e-06 (logits), within 0.0001"),
                              ("done", str(out_dir))):
            progress(stage, detail)
        return manifest

    monkeypatch.setattr(exporters_cli, "export_bundle", fake_export)
    assert exporters_cli.main(["src", "out"]) == 0
    out, err = capsys.readouterr()
    stages = [ln.split("] ", 1)[1].split(":")[0] for ln in err.splitlines()]
    assert stages == ["load", "trace", "convert", "validate", "done"]
    assert out.startswith("exported out") and "largest relative error 3.0e-06 (grad_prob)" in out and "passed" in out
    assert exporters_cli.main(["src", "out", "--format", "json", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out)["max_relative_error"]["grad_prob"] == 3e-6
    # on a terminal: one live line, each finished stage left behind with its duration
    tty = io.StringIO()
    stages_tty = Stages("x", stream=tty, live=True)
    stages_tty("load", "reading")
    stages_tty("trace", "gradient graph")
    stages_tty.close()
    lines = tty.getvalue().replace("\x1b[K", "").split("\n")
    assert re.search(r"x: load: reading \(\d+\.\ds\)$", lines[0]), lines
    assert re.search(r"x: trace: gradient graph \(\d+\.\ds\)$", lines[1]), lines
    # a stage's steps (validated shapes) each get their own line and their own time; the stage goes on live
    tty = io.StringIO()
    stages_tty = Stages("x", stream=tty, live=True)
    stages_tty("validate", "against torch autograd")
    stages_tty.step("validate", "shape 1 x 1: ok")
    stages_tty.step("validate", "shape 2 x 5: ok")
    stages_tty.close()
    lines = [ln.rsplit("\r", 1)[-1] for ln in tty.getvalue().replace("\x1b[K", "").split("\n") if ln]
    assert [re.sub(r" \(\d+\.\ds\)$", "", ln) for ln in lines] == [
        "x: validate: shape 1 x 1: ok", "x: validate: shape 2 x 5: ok", "x: validate: against torch autograd"], lines
    plain = io.StringIO()
    stages_plain = Stages("x", stream=plain, live=False)
    stages_plain.step("validate", "shape 1 x 1: ok")
    assert re.search(r"^x: \[ *\d+\.\ds\] validate: shape 1 x 1: ok$", plain.getvalue().strip())
