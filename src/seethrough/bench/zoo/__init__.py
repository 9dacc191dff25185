"""The zoo: small models with planted ground truth, trained on the CPU in seconds and cached.

Each entry point returns ``(model, meta)``; ``meta`` holds the answer key (the trigger and its
target class, the critical units, the feature directions, the task's circuit) and the measured
scores, and every entry is cached on disk by a hash of its config (`cached`), so the same config
gives bit-identical weights. The games of `seethrough.bench` score methods against these keys.
Imports only torch, numpy, scikit-learn's bundled digits, `seethrough.core` and `seethrough.evidence` (the `Trigger`).
"""

from ._seeding import derive_seed, generator, materialise
from .cache import cached, config_hash
from .classifiers import (
    DigitsCNN,
    DigitsMLP,
    MaskedLinear,
    planted_critical_units,
    robust_trojaned_classifier,
    train_classifier,
    trojaned_classifier,
)
from .data import digits16
from .sequences import (
    Attention,
    TinyTransformer,
    TransformerBlock,
    first_token_task,
    trained_first_token_transformer,
)
from .superposition import LOADING_THRESHOLD, REPRESENTED_NORM, ToyModel, sample_features, train_toy_model
from .trojans import random_blend_trigger, random_patch_trigger, random_warp_trigger

__all__ = [
    "config_hash", "cached", "derive_seed", "generator", "materialise",
    "digits16",
    "random_patch_trigger", "random_blend_trigger", "random_warp_trigger",
    "MaskedLinear", "DigitsMLP", "DigitsCNN", "train_classifier",
    "trojaned_classifier", "planted_critical_units", "robust_trojaned_classifier",
    "ToyModel", "sample_features", "train_toy_model", "REPRESENTED_NORM", "LOADING_THRESHOLD",
    "Attention", "TransformerBlock", "TinyTransformer", "first_token_task", "trained_first_token_transformer",
]
