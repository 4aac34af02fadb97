"""onnxruntime session creation, in one place: providers checked, threads set, silent fallbacks reported."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .errors import BundleError, ProviderError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
# TF32 matrix products (onnxruntime's CUDA default) keep 10 mantissa bits: enough for a prediction, not for
# finite differences or 1e-4 agreement with Captum. Pass ("CUDAExecutionProvider", {"use_tf32": "1"}) to opt in.
DEFAULT_OPTIONS = {"CUDAExecutionProvider": {"use_tf32": "0"}}

Provider = str | tuple[str, dict[str, Any]]


def provider_name(p: Provider) -> str:
    return p if isinstance(p, str) else p[0]


def resolve_providers(providers: Sequence[Provider] | None) -> list[Provider]:
    """Check requested providers (names, or (name, options) pairs) against the installed onnxruntime; CPU is always
    kept as the last fallback."""
    wanted: list[Provider] = list(providers) if providers else list(DEFAULT_PROVIDERS)
    available = ort.get_available_providers()
    missing = [provider_name(p) for p in wanted if provider_name(p) not in available]
    if missing:
        hint = " (install onnxruntime-gpu instead of onnxruntime)" if "CUDAExecutionProvider" in missing else ""
        raise ProviderError(f"execution provider(s) {missing} not available in this onnxruntime{hint}; available: {available}")
    out: list[Provider] = []
    for p in wanted:
        if isinstance(p, str) and p in DEFAULT_OPTIONS:
            out.append((p, dict(DEFAULT_OPTIONS[p])))
        else:
            out.append(p)
    if "CPUExecutionProvider" not in [provider_name(p) for p in out]:
        out.append("CPUExecutionProvider")
    return out


def create_session(path: Path, providers: Sequence[Provider], threads: int | None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.log_severity_level = 3
    # Each session owns a thread pool whose threads spin after a run. A model alternates two sessions (forward, then
    # gradient) and each spinning pool stole the cores from the other: batch-1 saliency took 11 + 23 ms instead of
    # 5 + 10.5 ms on 2 cores. Spinning during a run is kept; it stops when the run returns.
    so.add_session_config_entry("session.force_spinning_stop", "1")
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), so, providers=list(providers))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for corrupt files
        raise BundleError(f"cannot load {path.name} ({str(exc).splitlines()[0][:300]}): the bundle is corrupt, re-export it") from exc
    active = session.get_providers()
    fell_back = [provider_name(p) for p in providers if provider_name(p) not in active]
    if fell_back:
        warnings.warn(f"onnxruntime fell back from {fell_back} to {active} for {path.name}", RuntimeWarning, stacklevel=3)
    return session
