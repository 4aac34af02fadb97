"""onnxruntime session creation, in one place: providers checked, threads set, silent fallbacks reported."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from .errors import BundleError, ProviderError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """Check requested providers against the installed onnxruntime; CPU is always kept as the last fallback."""
    wanted = list(providers) if providers else list(DEFAULT_PROVIDERS)
    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        hint = " (install onnxruntime-gpu instead of onnxruntime)" if "CUDAExecutionProvider" in missing else ""
        raise ProviderError(f"execution provider(s) {missing} not available in this onnxruntime{hint}; available: {available}")
    if "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    return wanted


def create_session(path: Path, providers: Sequence[str], threads: int | None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), so, providers=list(providers))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for corrupt files
        raise BundleError(f"cannot load {path.name} ({str(exc).splitlines()[0][:300]}): the bundle is corrupt, re-export it") from exc
    active = session.get_providers()
    fell_back = [p for p in providers if p not in active]
    if fell_back:
        warnings.warn(f"onnxruntime fell back from {fell_back} to {active} for {path.name}", RuntimeWarning, stacklevel=3)
    return session
