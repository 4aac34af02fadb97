"""The benchmark script runs end to end on a tiny model (a smoke test; its numbers are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the benchmark compares against Captum on torch")
pytest.importorskip("captum", reason="the benchmark compares against Captum")

pytestmark = pytest.mark.slow  # exports a model and runs the benchmark against Captum

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_on_a_tiny_model(tmp_path):
    from tiny_models import build_classifier
    from xai_onnx_exporters import export_bundle

    src = build_classifier("bert", tmp_path / "model")
    export_bundle(src, tmp_path / "bundle")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), str(tmp_path / "bundle"), str(src),
                           "--n", "3", "--repeats", "1", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    methods = {r["method"]: r for r in report["methods"]}
    assert set(methods) == {"ig", "ig_adaptive", "saliency", "occlusion"}
    for name in ("ig", "saliency"):  # same numbers as Captum, even on a random model
        assert methods[name]["max_rel_diff_vs_captum"] <= 1e-4
    # occlusion differences of a near-flat random model are a few float32 ulps of the output; the 1e-4 parity is
    # checked on the real model in test_parity_captum.py
    assert methods["occlusion"]["max_rel_diff_vs_captum"] <= 1e-2
    assert "latency ours/captum" in proc.stdout
