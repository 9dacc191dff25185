"""seethrough.neurons: what single units do (the survey's §3).

Dataset-based (exemplars, activation statistics, dissection), feature synthesis, perturbation and
ablation (zero, mean, resample; steering), gradient attribution at any site (saliency,
gradient×input, integrated gradients, SmoothGrad/VarGrad, conductance; guided backprop as the
counter-example that fails sanity checks), and the hazards (polysemantic and frivolous units).
"""

from .ablation import UnitImportance, ablate, unit_importance
from .activation_statistics import ActivationStats, activation_stats
from .attribution import AttributionResult, gradient_x_input, integrated_gradients, saliency
from .conductance import conductance
from .dissection import Dissection, dissect
from .exemplars import Exemplars, receptive_fields, top_exemplars
from .frivolous import FrivolousUnits, frivolous_units
from .guided import guided_backprop
from .polysemantic import Polysemanticity, polysemanticity
from .prompts import SoftPrompt, synthesize_prompt
from .smoothing import smoothgrad, vargrad
from .steering import steer
from .synthesis import (
    Objective,
    Synthesis,
    Transforms,
    channel_objective,
    direction_objective,
    logit_objective,
    synthesize,
    unit_objective,
)
from .tokens import TokenAttribution

__all__ = ["unit_importance", "UnitImportance", "ablate", "steer",
           "integrated_gradients", "saliency", "gradient_x_input", "AttributionResult", "smoothgrad", "vargrad",
           "conductance", "guided_backprop", "TokenAttribution",
           "top_exemplars", "Exemplars", "receptive_fields", "activation_stats", "ActivationStats",
           "dissect", "Dissection",
           "synthesize", "Synthesis", "Objective", "Transforms", "unit_objective", "channel_objective",
           "direction_objective", "logit_objective", "synthesize_prompt", "SoftPrompt",
           "frivolous_units", "FrivolousUnits", "polysemanticity", "Polysemanticity"]
