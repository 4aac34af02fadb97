from .base import Explainer
from .finite_difference import FiniteDifference
from .integrated_gradients import IntegratedGradients
from .occlusion import Occlusion
from .saliency import GradientXInput, Saliency

METHODS: dict[str, type[Explainer]] = {
    "ig": IntegratedGradients,
    "saliency": Saliency,
    "grad_x_input": GradientXInput,
    "occlusion": Occlusion,
    "fd": FiniteDifference,
}

__all__ = ["METHODS", "Explainer", "FiniteDifference", "GradientXInput", "IntegratedGradients", "Occlusion", "Saliency"]
