"""seethrough.neurons: what single units do (ablation today; exemplars, synthesis, attribution next)."""

from .ablation import UnitImportance, unit_importance

__all__ = ["unit_importance", "UnitImportance"]
