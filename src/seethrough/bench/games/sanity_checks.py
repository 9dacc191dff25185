"""Game G4 for gradient attribution (Neurons / gradient attribution): sanity checks (Adebayo et al. 2018).

``sanity-checks``: maps must change when the model does. Each method's maps of a clean zoo digits
classifier are compared (Spearman, per image) with its maps of the same model after randomising
the top layer, every layer top-down (the cascade) or one layer at a time, and of a twin trained on
shuffled labels. A map that ignores the model (the Sobel baseline) scores 1.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...evidence import accuracy
from ..zoo import derive_seed, generator
from ..zoo.cache import cached
from ..zoo.classifiers import DigitsCNN, DigitsMLP, train_classifier, trojaned_classifier
from ..zoo.data import digits16
from .attribution import GRADIENT_METHODS, attribution_map, sobel_map, spearman_rows
from .base import Game, Metric, register

__all__ = ["SanityPlanted", "SanityAnswer", "weight_layers", "randomise_layers", "random_label_twin"]


def weight_layers(model: nn.Module) -> list[str]:
    """The paths of the model's ``nn.Linear``/``nn.Conv2d`` layers from the output down (the cascade's order).

    Example:
        >>> weight_layers(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))
        ['2', '0']
    """
    return [name for name, m in reversed(list(model.named_modules())) if isinstance(m, (nn.Linear, nn.Conv2d))]


def randomise_layers(model: nn.Module, layers: list[str], seed: int) -> nn.Module:
    """A deep copy of ``model`` with ``layers`` re-initialised (PyTorch's default distribution, seeded).

    The model itself is left as found.
    """
    twin = copy.deepcopy(model)
    gen = generator(seed, "randomise")
    with torch.no_grad():
        for name in layers:
            layer = twin.get_submodule(name)
            bound = 1.0 / math.sqrt(layer.weight[0].numel())
            for p in layer.parameters(recurse=False):
                p.copy_(torch.rand(p.shape, generator=gen) * 2 * bound - bound)
    return twin


def random_label_twin(arch: str, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """The zoo's clean digits recipe trained on labels shuffled once (seeded): a model that learnt no digits."""
    model, meta = trojaned_classifier(arch, "none", seed)
    recipe = meta["config"]
    config = {"arch": arch, "seed": seed, "epochs": recipe["epochs"], "lr": recipe["lr"],
              "batch_size": recipe["batch_size"], "version": 1}

    def build() -> nn.Module:
        init = derive_seed(seed, "init")
        return DigitsMLP(seed=init) if arch == "mlp" else DigitsCNN(seed=init)

    def train(model: nn.Module) -> dict[str, Any]:
        x, y = digits16("train")
        shuffled = y[torch.randperm(len(y), generator=generator(seed, "shuffle-labels"))]
        train_classifier(model, x, shuffled, epochs=config["epochs"], lr=config["lr"],
                         batch_size=config["batch_size"], seed=seed)
        xt, yt = digits16("test")
        return {"train_accuracy_on_shuffled": accuracy(model, x, shuffled), "test_accuracy": accuracy(model, xt, yt)}

    return cached("random_label_twin", config, build, train)


@dataclass(frozen=True, eq=False)
class SanityPlanted:
    """One case: a clean classifier, its randomised copies and random-label twin, and the test images."""

    model: nn.Module
    top: nn.Module  # the top layer re-initialised
    cascade: nn.Module  # every layer re-initialised
    independent: tuple[nn.Module, ...]  # one copy per layer, that layer re-initialised
    twin: nn.Module  # trained on shuffled labels
    inputs: Tensor
    labels: Tensor  # the true classes: the attribution target


@dataclass(frozen=True)
class SanityAnswer:
    """A method's ``(batch, 1, H, W)`` maps of the trained model and of each changed one."""

    trained: Tensor
    top: Tensor
    cascade: Tensor
    independent: tuple[Tensor, ...]
    twin: Tensor


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"arch": arch, "seed": seed, "n_images": 32} for arch in (("mlp",) if quick else ("mlp", "cnn"))]


def _build(case: Mapping[str, Any]) -> SanityPlanted:
    model, _ = trojaned_classifier(case["arch"], "none", case["seed"])
    twin, _ = random_label_twin(case["arch"], case["seed"])
    x, y = digits16("test")
    layers, seed = weight_layers(model), case["seed"]
    return SanityPlanted(model, randomise_layers(model, layers[:1], seed), randomise_layers(model, layers, seed),
                         tuple(randomise_layers(model, [name], seed) for name in layers), twin,
                         x[: case["n_images"]], y[: case["n_images"]])


def _maps_of_every_model(maps: Callable[[nn.Module], Tensor], planted: SanityPlanted) -> SanityAnswer:
    return SanityAnswer(maps(planted.model), maps(planted.top), maps(planted.cascade),
                        tuple(maps(m) for m in planted.independent), maps(planted.twin))


def _gradient_maps(method: str, planted: SanityPlanted, generator: torch.Generator) -> SanityAnswer:
    return _maps_of_every_model(
        lambda m: attribution_map(method, m, planted.inputs, planted.labels).sum(1, keepdim=True), planted)


def _sobel(planted: SanityPlanted, generator: torch.Generator) -> SanityAnswer:
    return _maps_of_every_model(lambda m: sobel_map(planted.inputs), planted)


def _score(answer: SanityAnswer, planted: SanityPlanted) -> dict[str, float]:
    def corr(other: Tensor, absolute: bool = False) -> float:
        reference = answer.trained
        return float(spearman_rows(reference.abs() if absolute else reference,
                                   other.abs() if absolute else other).mean())

    return {"rank_corr_top_randomised": corr(answer.top),
            "rank_corr_cascade": corr(answer.cascade),
            "rank_corr_independent": float(np.mean([corr(maps) for maps in answer.independent])),
            "rank_corr_random_labels": corr(answer.twin),
            "abs_rank_corr_top_randomised": corr(answer.top, absolute=True)}


GAME = register(Game(
    name="sanity-checks",
    item="Neurons / gradient attribution (sanity checks)",
    description=("Clean zoo digits classifiers. Each method's maps on 32 test images (true class) are compared with "
                 "its maps on the same model after randomising weights: the top layer, all layers top-down "
                 "(cascade), one layer at a time (independent, averaged), and on a twin trained on shuffled "
                 "labels. Score: mean Spearman rank correlation of the signed maps (lower is better: a map "
                 "that ignores the model scores 1), and of the |maps| after top-layer randomisation (where "
                 "g⊙x and IG keep the input's zeros, Adebayo et al.'s 'ABS' caveat). Baseline: Sobel edges of "
                 "the input."),
    metrics=(
        Metric("rank_corr_top_randomised", chance=1.0, bar=0.2, higher_is_better=False,
               description="signed maps, trained vs top layer re-initialised"),
        Metric("rank_corr_cascade", chance=1.0, bar=0.2, higher_is_better=False,
               description="signed maps, trained vs every layer re-initialised"),
        Metric("rank_corr_independent", chance=1.0, bar=0.2, higher_is_better=False,
               description="signed maps, trained vs one layer re-initialised, averaged over layers"),
        Metric("rank_corr_random_labels", chance=1.0, bar=0.2, higher_is_better=False,
               description="signed maps, trained vs a twin trained on shuffled labels"),
        Metric("abs_rank_corr_top_randomised", chance=1.0, bar=0.2, higher_is_better=False,
               description="|maps|, trained vs top layer re-initialised (Adebayo et al.'s ABS variant)"),
    ),
    cases=_cases,
    build=_build,
    methods={**{m: partial(_gradient_maps, m) for m in GRADIENT_METHODS}, "sobel": _sobel},
    score=_score,
    baselines=frozenset({"sobel"}),
    order=70,
))
