"""The attribution methods. Importing this package registers each in :data:`xai_onnx.registry.METHODS`."""

from ..registry import METHODS
from .base import Explainer
from .finite_difference import FiniteDifference
from .integrated_gradients import IntegratedGradients
from .kernel_shap import KernelShap
from .lime import Lime
from .occlusion import Occlusion
from .partition_shap import PartitionShap
from .saliency import GradientXInput, Saliency

# the order the CLI's help, /v1/model and `evaluate` list them in; methods registered elsewhere follow
_FIRST = ("ig", "saliency", "grad_x_input", "occlusion", "fd", "lime", "kernel_shap", "partition_shap")
for _name in [*_FIRST, *(n for n in list(METHODS) if n not in _FIRST)]:
    METHODS[_name] = METHODS.pop(_name)

__all__ = ["METHODS", "Explainer", "FiniteDifference", "GradientXInput", "IntegratedGradients", "KernelShap", "Lime",
           "Occlusion", "PartitionShap", "Saliency"]
