"""Where per-user files live: the default bundle is exported once into a cache directory."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_BUNDLE_NAME = "default"
_DEFAULT_DIR = "all-minilm-l6-v2-sst2"


def cache_dir() -> Path:
    """``$XAI_ONNX_HOME``, else ``$XDG_CACHE_HOME/xai-onnx``, else ``~/.cache/xai-onnx``."""
    if os.environ.get("XAI_ONNX_HOME"):
        return Path(os.environ["XAI_ONNX_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xai-onnx"


def default_bundle_dir() -> Path:
    return cache_dir() / _DEFAULT_DIR


def resolve_bundle(name: str | os.PathLike[str]) -> Path:
    """``"default"`` -> the default bundle's cache directory (if no directory of that name exists here); else the path."""
    p = Path(name)
    if str(name) == DEFAULT_BUNDLE_NAME and not p.exists():
        return default_bundle_dir()
    return p
