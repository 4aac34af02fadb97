"""Export output handling: --overwrite replaces only a bundle, in one step; SIGTERM cleans up like Ctrl-C; what a
SIGKILL leaves is removed by the next export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here exports a tiny model through torch

torch = pytest.importorskip("torch", reason="exporter tests need the export extras: pip install '.[export]'")

from tiny_models import build_classifier  # noqa: E402
from xai_onnx_exporters import ExportInputError, export_bundle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST = {"gradient": False, "validate_export": False}  # the output handling is the same; the export is quicker


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    return build_classifier("bert", tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def old_bundle(tiny_source, tmp_path_factory):
    """A bundle exported with max_length 20, copied to where a test overwrites it."""
    out = tmp_path_factory.mktemp("old") / "b"
    export_bundle(tiny_source, out, max_length=20, **FAST)
    return out


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_overwrite_refuses_a_directory_that_holds_no_bundle(tiny_source, tmp_path):
    out = tmp_path / "docs"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    with pytest.raises(ExportInputError, match="holds no bundle"):
        export_bundle(tiny_source, out, overwrite=True, **FAST)
    assert [p.name for p in out.iterdir()] == ["thesis.txt"]
    proc = subprocess.run([sys.executable, "-m", "xai_onnx.cli", "export", str(tiny_source), str(out), "--overwrite"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "holds no bundle" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["thesis.txt"] and not leftovers(out)


def test_overwrite_swaps_in_one_step(tiny_source, old_bundle, tmp_path, monkeypatch):
    """Every file-system step of the second export leaves a complete bundle at ``out`` (the old one or the new)."""
    out = tmp_path / "b"
    shutil.copytree(old_bundle, out)
    steps = []

    def watched(name, func):
        def call(*args, **kwargs):
            res = func(*args, **kwargs)
            manifest = out / "manifest.json"
            steps.append((name, manifest.is_file() and json.loads(manifest.read_text())["max_length"]))
            return res
        return call

    for mod, name in ((shutil, "rmtree"), (os, "rename"), (os, "replace")):
        monkeypatch.setattr(mod, name, watched(name, getattr(mod, name)))
    m = export_bundle(tiny_source, out, max_length=24, overwrite=True, **FAST)
    monkeypatch.undo()
    assert steps and all(v in (20, 24) for _, v in steps), steps  # never a moment without a bundle
    assert m.max_length == 24 and json.loads((out / "manifest.json").read_text())["max_length"] == 24
    assert not leftovers(out)


def test_overwrite_without_an_atomic_exchange_restores_the_old_bundle_on_failure(tiny_source, old_bundle, tmp_path,
                                                                                   monkeypatch):
    """Where the system cannot exchange two directories, the old bundle is moved aside first, and put back if the
    new one cannot be moved in."""
    from xai_onnx_exporters import output

    out = tmp_path / "b"
    shutil.copytree(old_bundle, out)
    monkeypatch.setattr(output, "_exchange", lambda a, b: False)
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new bundle into place
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="No space"):
        export_bundle(tiny_source, out, max_length=24, overwrite=True, **FAST)
    monkeypatch.setattr(os, "rename", real_rename)
    assert calls[0][1] == "old" and calls[2] == ("old", "b")  # moved aside, then back
    assert json.loads((out / "manifest.json").read_text())["max_length"] == 20
    assert not leftovers(out)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def test_next_export_removes_only_stale_work_directories(tiny_source, tmp_path):
    import socket

    out = tmp_path / "b"
    host = socket.gethostname()
    owners = {"dead": {"pid": _dead_pid(), "host": host, "start": None},
              "live": {"pid": os.getpid(), "host": host, "start": None},  # an export running now
              "elsewhere": {"pid": 1, "host": host + "-other", "start": None}}
    for name, owner in owners.items():
        (tmp_path / f".b.{name}" / "bundle").mkdir(parents=True)
        (tmp_path / f".b.{name}" / "export.pid").write_text(json.dumps(owner))
    (tmp_path / ".b.notours").mkdir()  # no pid file: someone else's
    export_bundle(tiny_source, out, **FAST)
    assert leftovers(out) == [".b.elsewhere", ".b.live", ".b.notours"]
    assert (out / "manifest.json").is_file()


# ---- kill an export in the middle: a subprocess paused inside a phase ------------------------------------------
PAUSED_EXPORT = """
import sys, time
from pathlib import Path
import xai_onnx_exporters.api as api
from xai_onnx_exporters.cli import main

phase, ready = sys.argv[1], Path(sys.argv[2])
real = getattr(api, phase)

def paused(*args, **kwargs):
    res = real(*args, **kwargs)
    ready.write_text("in " + phase)
    for _ in range(600):  # bounded: a minute at most
        time.sleep(0.1)
    return res

setattr(api, phase, paused)
sys.exit(main(sys.argv[3:]))
"""


def _start_paused(phase: str, src: Path, out: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    ready = tmp_path / f"ready-{phase}"
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_EXPORT, phase, str(ready), str(src), str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for _ in range(6000):  # at most 10 minutes on a loaded machine
        if ready.exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert ready.exists(), proc.communicate(timeout=60)
    assert leftovers(out), "the export should be writing its work directory now"
    return proc, ready


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["save_with_shared_weights", "validate"])
def test_sigterm_during_export_leaves_nothing(tiny_source, tmp_path, phase):
    out = tmp_path / "b"
    proc, _ = _start_paused(phase, tiny_source, out, tmp_path, "--no-gradient")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "nothing was written" in err
    assert not out.exists() and not leftovers(out)


@pytest.mark.slow
def test_sigkill_leftovers_are_removed_by_the_next_export(tiny_source, tmp_path):
    out = tmp_path / "b"
    proc, _ = _start_paused("validate", tiny_source, out, tmp_path, "--no-gradient")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    left = leftovers(out)
    assert left and not out.exists()  # nothing can clean up after SIGKILL ...
    export_bundle(tiny_source, out, **FAST)  # ... but the next export does
    assert not leftovers(out) and (out / "manifest.json").is_file()


@pytest.mark.slow
def test_sigkill_during_overwrite_keeps_the_old_bundle(tiny_source, old_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(old_bundle, out)
    proc, _ = _start_paused("validate", tiny_source, out, tmp_path, "--no-gradient", "--overwrite", "--max-length", "24")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert json.loads((out / "manifest.json").read_text())["max_length"] == 20
