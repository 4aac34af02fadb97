"""Error types. Each subclasses a built-in exception so callers can catch either."""

from __future__ import annotations


class XaiOnnxError(Exception):
    """Base class of every error this project raises on purpose."""


class BundleError(XaiOnnxError, ValueError):
    """A bundle directory is missing, incomplete, corrupt or of an unknown schema."""


class GradientUnavailableError(BundleError):
    """A gradient method was asked of a bundle exported without a gradient graph."""


class FeaturesUnavailableError(BundleError):
    """Influence or prototypes were asked of a bundle whose forward graph gives no features (the input of a linear
    classification head): an imported graph where no such head was found."""


class InputError(XaiOnnxError, ValueError):
    """A user-supplied argument (text, target, option, file) is unusable."""


class ProviderError(XaiOnnxError, RuntimeError):
    """An execution provider was asked for that onnxruntime cannot give."""


def install_hint(extra: str, *packages: str) -> str:
    """How to install an optional extra, in both forms: from an index, and from the source tree as the README does
    (the package is not on PyPI yet, so the first alone can fail)."""
    more = "".join(f" {p}" for p in packages)
    return (f"pip install 'xai-onnx[{extra}]'{more}, or from a clone of the source: pip install '.[{extra}]'{more} "
            "in its root")
