"""Import an ONNX text classifier without torch: graph surgery, reverse-mode gradients on the ONNX graph, validation
by finite differences. Needs onnx (the ``import`` extra), never torch or transformers."""

from .api import import_bundle
from .autodiff import UnsupportedOperatorError, gradient_model

__all__ = ["UnsupportedOperatorError", "gradient_model", "import_bundle"]
