"""Error types. Each subclasses a built-in exception so callers can catch either."""

from __future__ import annotations


class XaiOnnxError(Exception):
    """Base class of every error this project raises on purpose."""


class BundleError(XaiOnnxError, ValueError):
    """A bundle directory is missing, incomplete, corrupt or of an unknown schema."""


class GradientUnavailableError(BundleError):
    """A gradient method was asked of a bundle exported without a gradient graph."""


class InputError(XaiOnnxError, ValueError):
    """A user-supplied argument (text, target, option, file) is unusable."""


class ProviderError(XaiOnnxError, RuntimeError):
    """An execution provider was asked for that onnxruntime cannot give."""
