"""Game G5b for gradient attribution (Neurons / gradient attribution): remove and retrain (Hooker et al. 2019).

``roar``: each method ranks every train and test image's pixels by |attribution| (a clean zoo MLP,
true class); the top fraction is replaced by the train mean and a small MLP is retrained from
scratch. The score compares the accuracy after the method's removal with the accuracy after
removing uniformly random pixels: a method that finds the informative pixels removes more.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..zoo import derive_seed, generator, materialise
from ..zoo.classifiers import trojaned_classifier
from ..zoo.data import digits16
from .attribution import attribution_map
from .base import Game, Metric, register

__all__ = ["RoarPlanted", "PixelRanking", "remove_top_pixels"]

ROAR_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
ROAR_FRACTIONS_QUICK = (0.3, 0.6, 0.9)
ROAR_METHODS = ("saliency", "gradient-x-input", "integrated-gradients", "smoothgrad", "vargrad")


def _retrained_accuracy(x: Tensor, y: Tensor, xt: Tensor, yt: Tensor, seed: int) -> float:
    """Test accuracy of a small MLP (256-32-10, full-batch Adam, 150 steps) trained from scratch on ``(x, y)``."""
    with torch.device("meta"):  # initialised from the seed by materialise, never from the global RNG
        model = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10))
    materialise(model, derive_seed(seed, "roar-init"))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return float((model(xt).argmax(1) == yt).double().mean())


def remove_top_pixels(x: Tensor, scores: Tensor, fraction: float, fill: Tensor) -> Tensor:
    """``x`` with each image's top ``fraction`` of pixels by ``scores`` replaced by ``fill`` (the train mean)."""
    flat, k = x.flatten(1).clone(), int(round(fraction * x[0].numel()))
    top = scores.flatten(1).topk(k, dim=1).indices
    flat.scatter_(1, top, fill.flatten().expand(len(x), -1).gather(1, top))
    return flat.view_as(x)


@dataclass(frozen=True)
class PixelRanking:
    """Scores ranking the pixels of every train and test image (the top ones are removed first)."""

    train: Tensor
    test: Tensor


def _retrained_curve(ranking: PixelRanking, seed: int, fractions: tuple[float, ...]) -> tuple[float, ...]:
    """Retrained test accuracy after removing each fraction of the top-ranked pixels of every image."""
    x, y = digits16("train")
    xt, yt = digits16("test")
    fill = x.mean(0)
    return tuple(_retrained_accuracy(remove_top_pixels(x, ranking.train, f, fill), y,
                                     remove_top_pixels(xt, ranking.test, f, fill), yt, seed) for f in fractions)


def _uniform_ranking(gen: torch.Generator) -> PixelRanking:
    x, xt = digits16("train")[0], digits16("test")[0]
    train = torch.rand(x.shape, generator=gen)
    return PixelRanking(train, torch.rand(xt.shape, generator=gen))


@functools.lru_cache(maxsize=8)
def _random_curve(seed: int, fractions: tuple[float, ...]) -> tuple[float, ...]:
    """The reference: accuracy after removing uniformly random pixels (a pure function of its arguments)."""
    return _retrained_curve(_uniform_ranking(generator(seed, "roar-random-reference")), seed, fractions)


@dataclass(frozen=True, eq=False)
class RoarPlanted:
    """One case: the clean digits MLP that attributes, the removal fractions and the random-removal curve."""

    model: nn.Module
    seed: int
    fractions: tuple[float, ...]
    reference: tuple[float, ...]  # retrained accuracy after removing random pixels, per fraction


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "fractions": list(ROAR_FRACTIONS_QUICK if quick else ROAR_FRACTIONS)}]


def _build(case: Mapping[str, Any]) -> RoarPlanted:
    fractions = tuple(float(f) for f in case["fractions"])
    reference = _random_curve(case["seed"], fractions)
    model, _ = trojaned_classifier("mlp", "none", case["seed"])
    return RoarPlanted(model, case["seed"], fractions, reference)


def _attribution_ranking(method: str, planted: RoarPlanted, generator: torch.Generator) -> PixelRanking:
    """|attribution| to the true class, from the trained model."""
    train, test = (attribution_map(method, planted.model, a, b).abs() for a, b in (digits16("train"), digits16("test")))
    return PixelRanking(train, test)


def _random(planted: RoarPlanted, generator: torch.Generator) -> PixelRanking:
    return _uniform_ranking(generator)


def _score(answer: PixelRanking, planted: RoarPlanted) -> dict[str, float]:
    curve = _retrained_curve(answer, planted.seed, planted.fractions)
    return {"area_vs_random": float(np.mean(np.subtract(planted.reference, curve)))}


GAME = register(Game(
    name="roar",
    item="Neurons / gradient attribution (remove and retrain)",
    description=("ROAR on digits: each method ranks every train and test image's pixels by |attribution| (from a "
                 "clean zoo MLP, true class); the top fraction is replaced by the train mean and a small MLP is "
                 "retrained from scratch. Score: the mean over fractions of (accuracy after removing random "
                 "pixels - accuracy after removing the method's), > 0 when the method removes more information "
                 "than random. Baseline: another random ranking."),
    metrics=(
        Metric("area_vs_random", chance=0.0, bar=0.05,
               description="mean over removal fractions of the accuracy gap to random removal"),
    ),
    cases=_cases,
    build=_build,
    methods={**{m: partial(_attribution_ranking, m) for m in ROAR_METHODS}, "random": _random},
    score=_score,
    baselines=frozenset({"random"}),
    order=90,
))
