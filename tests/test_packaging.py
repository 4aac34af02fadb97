"""The installed distribution holds every runtime module (an editable install would hide a missing subpackage)."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import xai_onnx

ROOT = Path(__file__).resolve().parents[1]


def test_every_runtime_package_is_declared():
    import tomllib

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"xai_onnx"} | {f"xai_onnx.{m.name}" for m in pkgutil.walk_packages(xai_onnx.__path__) if m.ispkg}
    assert found <= declared, f"packages missing from pyproject.toml: {sorted(found - declared)}"
