"""onnxruntime session creation, in one place: providers checked, threads set, silent fallbacks reported."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .errors import BundleError, InputError, ProviderError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
# TF32 matrix products (onnxruntime's CUDA default) keep 10 mantissa bits: enough for a prediction, not for
# finite differences or 1e-4 agreement with Captum. Pass ("CUDAExecutionProvider", {"use_tf32": "1"}) to opt in.
DEFAULT_OPTIONS = {"CUDAExecutionProvider": {"use_tf32": "0"}}

Provider = str | tuple[str, dict[str, Any]]


def provider_name(p: Provider) -> str:
    return p if isinstance(p, str) else p[0]


def check_providers(providers: Any) -> list[Provider]:
    """``providers`` as a list of names or (name, options) pairs. One name, or one (name, options) pair, is taken
    as a list of one (a string is not split into characters). InputError naming the bad entry."""
    if providers is None:
        return []
    if isinstance(providers, str):
        return [providers]
    if isinstance(providers, tuple) and len(providers) == 2 and isinstance(providers[0], str) and isinstance(providers[1], dict):
        return [providers]
    if not isinstance(providers, (list, tuple)):
        raise InputError(f"providers must be a list of execution provider names, got {type(providers).__name__}")
    out: list[Provider] = []
    for i, p in enumerate(providers):
        if isinstance(p, str):
            out.append(p)
        elif (isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], dict)
              and all(isinstance(k, str) for k in p[1])):
            out.append((p[0], dict(p[1])))
        else:
            raise InputError(f"providers[{i}] must be a provider name or a (name, options dict) pair, got {p!r:.60}")
    return out


def resolve_providers(providers: Sequence[Provider] | None) -> list[Provider]:
    """Check requested providers (names, or (name, options) pairs) against the installed onnxruntime; CPU is always
    kept as the last fallback."""
    wanted = check_providers(providers) or list(DEFAULT_PROVIDERS)
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
