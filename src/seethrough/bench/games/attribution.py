"""Games for gradient attribution (Neurons / gradient attribution): localisation and faithfulness.

* ``attribution-localisation`` (G3): on images stamped with a planted trojan trigger, the
  target-class attribution should sit on the trigger (Spearman and pixel AUROC against its mask).
* ``attribution-faithfulness`` (G5a): on tabular data with k known relevant features, the top-k
  attributed features should be the relevant ones (chance k/d).

Also the helpers the attribution games share (`attribution_map` by method name, row-wise rank
statistics, the Sobel baseline). G4 is in `sanity_checks`, G5b in `roar`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...evidence import Trigger, stamp
from ...evidence.ranks import auroc, spearman
from ...neurons.attribution import gradient_x_input, integrated_gradients, saliency
from ...neurons.guided import guided_backprop
from ...neurons.smoothing import smoothgrad, vargrad
from ..zoo.classifiers import trojaned_classifier
from ..zoo.data import digits16
from ..zoo.tabular import tabular_task, trained_tabular_mlp
from .base import Game, Metric, register

__all__ = ["LocalisationPlanted", "FaithfulnessPlanted", "AttributionAnswer", "attribution_map", "spearman_rows",
           "auroc_rows", "sobel_map"]

GRADIENT_METHODS = ("saliency", "gradient-x-input", "integrated-gradients", "smoothgrad", "guided-backprop")

_ATTRIBUTIONS: dict[str, Callable[[nn.Module, Tensor, Tensor], Tensor]] = {
    "saliency": lambda model, x, target: saliency(model, x, target, absolute=False).values,
    "gradient-x-input": lambda model, x, target: gradient_x_input(model, x, target).values,
    "integrated-gradients": lambda model, x, target: integrated_gradients(model, x, target, n_steps=32).values,
    # digits in [0, 1]: noise of 15% of the range (Smilkov et al.)
    "smoothgrad": lambda model, x, target: smoothgrad(model, x, target, n_samples=32, stdev=0.15).values,
    "vargrad": lambda model, x, target: vargrad(model, x, target, n_samples=32, stdev=0.15).values,
    "guided-backprop": lambda model, x, target: guided_backprop(model, x, target).values,
}


def attribution_map(method: str, model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """The signed attribution of ``target`` to ``x`` by a named gradient method, shaped like ``x``.

    Example:
        >>> attribution_map("saliency", nn.Linear(2, 2), torch.ones(3, 2), torch.zeros(3, dtype=torch.long)).shape
        torch.Size([3, 2])
    """
    if method not in _ATTRIBUTIONS:
        raise KeyError(f"unknown attribution method {method!r}; known: {list(_ATTRIBUTIONS)}.")
    return _ATTRIBUTIONS[method](model, x, target)


def spearman_rows(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each row of ``a`` with the same row of ``b`` (`seethrough.evidence.spearman`).

    Example:
        >>> spearman_rows(torch.tensor([[1.0, 2, 3]]), torch.tensor([[10.0, 30, 20]])).tolist()
        [0.5]
    """
    return torch.from_numpy(np.atleast_1d(spearman(a.flatten(1), b.flatten(1))))


def auroc_rows(scores: Tensor, mask: Tensor) -> Tensor:
    """Per row, the AUROC of ``scores`` for the binary ``mask`` (`seethrough.evidence.auroc`).

    Example:
        >>> auroc_rows(torch.tensor([[0.1, 0.9, 0.5, 0.5]]), torch.tensor([0.0, 1, 1, 0])).tolist()
        [0.875]
    """
    return torch.from_numpy(np.atleast_1d(auroc(scores.flatten(1), mask.flatten())))


def sobel_map(x: Tensor) -> Tensor:
    """Sobel edge magnitude of ``(batch, C, H, W)`` images, summed over channels: an attribution that ignores the model."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype)
    kernels = torch.stack([kx, kx.T])[:, None]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    edges = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), kernels)
    return edges.norm(dim=1).reshape(x.shape).sum(1, keepdim=True)


def _centre_map(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    return (-(rows**2 + cols**2).sqrt()).expand(len(x), 1, h, w)


@dataclass(frozen=True)
class AttributionAnswer:
    """A method's attribution scores: per image ``(batch, 1, H, W)`` |maps| (G3) or per row ``(batch, d)`` (G5a)."""

    scores: Tensor


# -- G3: localisation of a planted trigger ---------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LocalisationPlanted:
    """One case: a patch-trojaned classifier, clean test images stamped with its trigger, and the trigger."""

    model: nn.Module
    inputs: Tensor  # stamped images of classes other than the trigger's target
    trigger: Trigger


def _localisation_cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"arch": arch, "seed": seed, "n_images": 32} for arch in ("mlp", "cnn")]


def _localisation_build(case: Mapping[str, Any]) -> LocalisationPlanted:
    model, meta = trojaned_classifier(case["arch"], "patch", case["seed"])
    trigger = Trigger.from_dict(meta["trigger"])
    x, y = digits16("test")
    return LocalisationPlanted(model, stamp(x[y != trigger.target][: case["n_images"]], trigger), trigger)


def _localise(method: str, planted: LocalisationPlanted, generator: torch.Generator) -> AttributionAnswer:
    x = planted.inputs
    target = torch.full((len(x),), planted.trigger.target)
    return AttributionAnswer(attribution_map(method, planted.model, x, target).abs().sum(1, keepdim=True))


def _localise_sobel(planted: LocalisationPlanted, generator: torch.Generator) -> AttributionAnswer:
    return AttributionAnswer(sobel_map(planted.inputs))


def _localise_random(planted: LocalisationPlanted, generator: torch.Generator) -> AttributionAnswer:
    return AttributionAnswer(torch.rand(planted.inputs.shape, generator=generator))


def _localise_centre(planted: LocalisationPlanted, generator: torch.Generator) -> AttributionAnswer:
    return AttributionAnswer(_centre_map(planted.inputs))


def _localisation_score(answer: AttributionAnswer, planted: LocalisationPlanted) -> dict[str, float]:
    maps, mask = answer.scores, planted.trigger.mask
    return {"pixel_auroc": float(auroc_rows(maps, mask).mean()),
            "spearman": float(spearman_rows(maps, mask.expand_as(maps[:, 0]).reshape(len(maps), -1)).mean())}


LOCALISATION = register(Game(
    name="attribution-localisation",
    item="Neurons / gradient attribution (localisation)",
    description=("Patch-trojaned digits classifiers (2-3 px trigger at a random place). On 32 clean test images "
                 "stamped with the trigger, the |attribution| to the trojan's target class (summed over "
                 "channels) is scored against the trigger's mask: Spearman correlation and pixel AUROC, averaged "
                 "over images. Baselines ignore the model: Sobel edges, random maps, a centre bias."),
    metrics=(
        Metric("pixel_auroc", chance=0.5, bar=0.9, description="AUROC of |attribution| for trigger pixels"),
        Metric("spearman", chance=0.0, bar=0.2,
               description="Spearman correlation of |attribution| with the 0/1 trigger mask (a perfect ranking "
                           "scores only 0.21 for a 4-pixel and 0.32 for a 9-pixel trigger: the mask is mostly ties)"),
    ),
    cases=_localisation_cases,
    build=_localisation_build,
    methods={**{m: partial(_localise, m) for m in GRADIENT_METHODS},
             "sobel": _localise_sobel, "random": _localise_random, "centre": _localise_centre},
    score=_localisation_score,
    baselines=frozenset({"sobel", "random", "centre"}),
    order=60,
))


# -- G5a: faithfulness on tabular data with known relevant features -----------------------------------


@dataclass(frozen=True, eq=False)
class FaithfulnessPlanted:
    """One case: a tabular MLP, test rows, and the key (which features the label depends on)."""

    model: nn.Module
    inputs: Tensor  # (n_rows, n_features) test rows
    relevant: Tensor  # (n_features,) bool: the features the label depends on
    n_relevant: int


def _faithfulness_cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "n_features": 20, "n_relevant": 5, "n_rows": 200}]


def _faithfulness_build(case: Mapping[str, Any]) -> FaithfulnessPlanted:
    d, k = case["n_features"], case["n_relevant"]
    model, meta = trained_tabular_mlp(case["seed"], n_features=d, n_relevant=k)
    x, _, _ = tabular_task(case["seed"], case["n_rows"], n_features=d, n_relevant=k, split="test")
    relevant = torch.zeros(d, dtype=torch.bool)
    relevant[meta["relevant"]] = True
    return FaithfulnessPlanted(model, x, relevant, k)


def _predicted(planted: FaithfulnessPlanted) -> Tensor:
    with torch.no_grad():
        return planted.model(planted.inputs).argmax(1)


def _attribute_features(method: str, planted: FaithfulnessPlanted, generator: torch.Generator) -> AttributionAnswer:
    return AttributionAnswer(attribution_map(method, planted.model, planted.inputs, _predicted(planted)).abs())


def _attribute_features_smoothgrad(planted: FaithfulnessPlanted, generator: torch.Generator) -> AttributionAnswer:
    # the features have unit scale: noise of 0.3 (the image games use 15% of [0, 1])
    noisy = smoothgrad(planted.model, planted.inputs, _predicted(planted), n_samples=32, stdev=0.3)
    return AttributionAnswer(noisy.values.abs())


def _random_features(planted: FaithfulnessPlanted, generator: torch.Generator) -> AttributionAnswer:
    return AttributionAnswer(torch.rand(planted.inputs.shape, generator=generator))


def _faithfulness_score(answer: AttributionAnswer, planted: FaithfulnessPlanted) -> dict[str, float]:
    top = answer.scores.topk(planted.n_relevant, dim=1).indices
    return {"feature_agreement": float(planted.relevant[top].double().mean())}


FAITHFULNESS = register(Game(
    name="attribution-faithfulness",
    item="Neurons / gradient attribution (faithfulness, known relevant features)",
    description=("An MLP trained on synthetic tabular data whose label depends on k=5 of d=20 standard-normal "
                 "features (signed linear score plus one interaction). On 200 test rows, the fraction of each "
                 "row's top-5 |attributed| features that are relevant, averaged (chance k/d = 0.25)."),
    metrics=(
        Metric("feature_agreement", chance=0.25, bar=0.7,
               description="overlap of each row's top-5 |attribution| with the 5 relevant features"),
    ),
    cases=_faithfulness_cases,
    build=_faithfulness_build,
    methods={**{m: partial(_attribute_features, m) for m in ("saliency", "gradient-x-input", "integrated-gradients")},
             "smoothgrad": _attribute_features_smoothgrad, "random": _random_features},
    score=_faithfulness_score,
    baselines=frozenset({"random"}),
    order=80,
))
