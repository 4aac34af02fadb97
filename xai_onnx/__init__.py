"""xai-onnx: explanations for transformer text classifiers on onnxruntime, without PyTorch.

Imports only the standard library, numpy, onnxruntime and tokenizers.
"""

from .errors import (
    BundleError,
    FeaturesUnavailableError,
    GradientUnavailableError,
    InputError,
    ProviderError,
    XaiOnnxError,
)
from .methods import METHODS, Explainer, FiniteDifference, GradientXInput, IntegratedGradients, Occlusion, Saliency
from .model import Model
from .quadrature import approximation_parameters
from .results import Attribution, Prediction, Target

__version__ = "0.1.0"

__all__ = [
    "METHODS", "Attribution", "BundleError", "Explainer", "FeaturesUnavailableError", "FiniteDifference",
    "GradientUnavailableError",
    "GradientXInput", "InputError", "IntegratedGradients", "Model", "Occlusion", "Prediction", "ProviderError",
    "Saliency", "Target", "XaiOnnxError", "approximation_parameters",
]
