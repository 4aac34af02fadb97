"""The CLI run in this process (no interpreter start-up per call), for tests."""

from __future__ import annotations

import contextlib
import io
import subprocess


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``xai-onnx ARGS`` in this process: exit code (argparse's usage errors included), stdout and stderr."""
    from xai_onnx.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(["xai-onnx", *args], code, out.getvalue(), err.getvalue())
