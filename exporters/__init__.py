"""Export-time side of xai-onnx (installed as ``xai_onnx_exporters``).

The torch route (``export_bundle``) needs torch and transformers; the ONNX route (:mod:`.onnx_import`) needs only
onnx. Names are loaded on first use, so that importing the ONNX route never imports torch. The runtime never imports
this package; the bundle's manifest is the only contract between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import export_bundle
    from .errors import ExportError, ExportInputError, ValidationError
    from .output import ExportTerminated
    from .sources import ARCHITECTURES

__all__ = ["ARCHITECTURES", "ExportError", "ExportInputError", "ExportTerminated", "ValidationError", "export_bundle"]
_WHERE = {"export_bundle": ".api", "ExportError": ".errors", "ExportInputError": ".errors", "ValidationError": ".errors",
          "ExportTerminated": ".output", "ARCHITECTURES": ".sources"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
