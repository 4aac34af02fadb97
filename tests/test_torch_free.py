"""The runtime must import and explain with torch (and every export-time package) made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from blocking import blocker

BLOCKER = blocker("torch", "transformers", "optimum", "onnx", "onnxscript", "captum", "sentence_transformers",
                  "xai_onnx_exporters", "scipy", "sklearn")


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_import_pulls_in_only_the_allowed_packages():
    proc = run_blocked("""
        import sys, xai_onnx, xai_onnx.cli
        third = {m.split(".")[0] for m in sys.modules if not m.startswith("_")} - set(sys.stdlib_module_names)
        print(sorted(third))
    """)
    assert proc.returncode == 0, proc.stderr
    # onnxruntime's own dependencies may load with it, depending on its version
    allowed = {"xai_onnx", "numpy", "onnxruntime", "tokenizers", "coloredlogs", "humanfriendly", "flatbuffers",
               "packaging", "google", "sympy", "mpmath", "sitecustomize"}
    assert set(eval(proc.stdout.strip())) <= allowed, proc.stdout


def test_all_methods_run_without_torch(handmade, handmade_forward_only):
    proc = run_blocked(f"""
        import xai_onnx, sys
        m = xai_onnx.Model({str(handmade[0])!r})
        for name, cls in xai_onnx.METHODS.items():
            r = cls(m).explain(["good movie", "not fun"])
            assert len(r) == 2 and len(r[0].scores) == {{"token": 4, "word": 2}}[r[0].granularity], name
        f = xai_onnx.Model({str(handmade_forward_only)!r})
        xai_onnx.FiniteDifference(f).explain(["good"])
        for name in ("lime", "kernel_shap", "partition_shap"):
            xai_onnx.METHODS[name](f).explain(["good"])
        assert "torch" not in sys.modules
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_cli_explain_without_torch(handmade):
    proc = run_blocked(f"""
        import sys
        from xai_onnx.cli import main
        sys.exit(main(["explain", {str(handmade[0])!r}, "--text", "good movie", "--method", "ig"]))
    """)
    assert proc.returncode == 0, proc.stderr
    assert '"method": "ig"' in proc.stdout


def test_export_without_extras_says_what_to_install(tmp_path):
    proc = run_blocked(f"""
        import sys
        from xai_onnx.cli import main
        sys.exit(main(["export", {str(tmp_path)!r}, {str(tmp_path / "out")!r}]))
    """)
    assert proc.returncode == 2 and "pip install 'xai-onnx[export]'" in proc.stderr and "Traceback" not in proc.stderr
