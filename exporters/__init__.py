"""Export-time side of xai-onnx (installed as ``xai_onnx_exporters``): needs torch and transformers.

The runtime never imports this package; the bundle's manifest is the only contract between them.
"""

from .api import export_bundle
from .errors import ExportError, ExportInputError, ValidationError
from .output import ExportTerminated
from .sources import ARCHITECTURES

__all__ = ["ARCHITECTURES", "ExportError", "ExportInputError", "ExportTerminated", "ValidationError", "export_bundle"]
