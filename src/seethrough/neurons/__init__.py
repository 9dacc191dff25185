"""seethrough.neurons: what single units do (ablation today; exemplars, synthesis, attribution next)."""

from .ablation import UnitImportance, unit_importance
from .attribution import AttributionResult, gradient_x_input, integrated_gradients, saliency

__all__ = ["unit_importance", "UnitImportance", "integrated_gradients", "saliency", "gradient_x_input",
           "AttributionResult"]
