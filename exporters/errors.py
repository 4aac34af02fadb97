"""Exporter errors. ``ExportInputError`` is the user's to fix (exit code 2 in the CLI)."""

from __future__ import annotations

from xai_onnx.errors import XaiOnnxError


class ExportError(XaiOnnxError, RuntimeError):
    """The export itself failed."""


class ExportInputError(XaiOnnxError, ValueError):
    """The source, head, options or output directory cannot be used; nothing was written."""


class ValidationError(ExportError):
    """onnxruntime disagreed with torch autograd beyond the tolerance; nothing was written."""
