"""Game: recover planted modules from the weights alone (Subnetworks / modular partitioning).

Each case is a side-by-side-digits MLP (`zoo.modules.modular_mlp`): either trained with block-diagonal
masks, then given cross-module weights of up to 10% of the in-module magnitude and its hidden
units shuffled (a planted partition), or trained dense (a control with no modules). The method
partitions the unit graph (`subnetworks.partition`) and measures clusterability against 20
within-layer shuffles; the score is the adjusted Rand index of the recovered modules against the
planted ones over every unit of every layer (chance 0) and the z-score. Dense controls are
scored on the same nominal split (ARI and |z| near 0 expected) and always shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ...subnetworks import clusterability, partition
from ..zoo.modules import modular_mlp
from .base import Game, Metric, register

__all__ = ["Planted", "Answer"]

N_SHUFFLES = 20


@dataclass(frozen=True, eq=False)
class Planted:
    """One case: the model, its number of modules, whether it is a dense control, the planted module of each unit."""

    model: nn.Module
    n_modules: int
    dense: bool
    modules: dict[str, np.ndarray]
    seed: int


@dataclass(frozen=True)
class Answer:
    labels: dict[str, np.ndarray]
    z_score: float | None


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "n_modules": 2, "dense": False, "eps": 0.1},
            {"seed": seed, "n_modules": 3, "dense": False, "eps": 0.1},
            {"seed": seed, "n_modules": 2, "dense": True, "eps": 0.1}]


def _build(case: Mapping[str, Any]) -> Planted:
    model, meta = modular_mlp(case["seed"], n_modules=case["n_modules"], dense=case["dense"], eps=case["eps"])
    return Planted(model, case["n_modules"], case["dense"],
                   {path: np.asarray(units) for path, units in meta["modules"].items()}, case["seed"])


def _spectral(planted: Planted, generator: torch.Generator) -> Answer:
    found = partition(planted.model, planted.n_modules, seed=planted.seed)
    z = clusterability(planted.model, planted.n_modules, n_shuffles=N_SHUFFLES, seed=planted.seed).z_score
    return Answer(found.labels, z)


def _random(planted: Planted, generator: torch.Generator) -> Answer:
    return Answer({path: torch.randint(0, planted.n_modules, (len(units),), generator=generator).numpy()
                   for path, units in planted.modules.items()}, None)


def _score(answer: Answer, planted: Planted) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score

    truth = np.concatenate([planted.modules[p] for p in planted.modules])
    found = np.concatenate([answer.labels[p] for p in planted.modules])
    ari = float(adjusted_rand_score(truth, found))
    if planted.dense:
        out = {"dense_ari": ari}
        if answer.z_score is not None:
            out["dense_abs_z"] = abs(answer.z_score)
        return out
    out = {"ari": ari}
    if answer.z_score is not None:
        out["z_score"] = answer.z_score
    return out


GAME = register(Game(
    name="planted-modules",
    item="Subnetworks / modular partitioning (spectral n-cut, clusterability)",
    description=("Side-by-side-digits MLPs trained with block-diagonal masks (2 or 3 modules), then cross-module "
                 "weights of up to 10% of the in-module magnitude and shuffled hidden units; and a dense control. "
                 "The partition of the unit graph is scored by ARI against the planted modules, clusterability by "
                 f"its z-score against {N_SHUFFLES} within-layer weight shuffles."),
    metrics=(
        Metric("ari", chance=0.0, bar=0.9, description="adjusted Rand index of the recovered modules (every unit)"),
        Metric("z_score", chance=0.0, bar=-5.0, higher_is_better=False,
               description="clusterability z-score against within-layer shuffles (negative = modular)"),
        # The controls' "chance" is the failing reference (as in sanity-checks): a method fooled into
        # reporting the nominal split as modules gives ARI 1, and |z| at the modular bar (5).
        Metric("dense_ari", chance=1.0, bar=0.2, higher_is_better=False,
               description="dense control: ARI against a nominal split (no modules planted; near 0 expected)"),
        Metric("dense_abs_z", chance=5.0, bar=3.0, higher_is_better=False,
               description="dense control: |z| of clusterability (no modules planted; near 0 expected)"),
    ),
    cases=_cases,
    build=_build,
    methods={"spectral": _spectral, "random": _random},
    score=_score,
    baselines=frozenset({"random"}),
    order=200,
))
