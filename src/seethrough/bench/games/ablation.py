"""Game: find the units whose removal hurts a target class most (Neurons / perturbation & ablation).

Each case is a digits MLP whose target class reads only from a planted set of ``k`` hidden units
(`planted_critical_units`). A method names ``k`` units; the score is the overlap with the planted
set (chance ``k / n_units``) and whether `validate` confirms the named units against random ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ...core.sites import Site
from ...evidence import Finding, target_log_prob, validate
from ...neurons import unit_importance
from ..zoo.classifiers import planted_critical_units
from ..zoo.data import digits16
from .base import Game, Metric, register

__all__ = ["Planted", "Answer"]

N_CRITICAL, HIDDEN = 4, 32


@dataclass(frozen=True, eq=False)
class Planted:
    """One case: the model, its digits, the target class and the answer key (the critical units)."""

    model: nn.Module
    inputs: Tensor  # every test digit: the reference of mean and resample ablation
    target_inputs: Tensor  # the test digits of the target class: what the units are judged on
    target: int
    site: Site
    critical_units: frozenset[int]
    n_units: int
    k: int
    n_controls: int
    seed: int


@dataclass(frozen=True)
class Answer:
    units: tuple[int, ...]


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "n_critical": N_CRITICAL, "hidden": HIDDEN, "n_controls": 49 if quick else 99}]


def _build(case: Mapping[str, Any]) -> Planted:
    model, meta = planted_critical_units(case["seed"], n_critical=case["n_critical"], hidden=case["hidden"])
    x, y = digits16("test")
    target = int(meta["target_class"])
    return Planted(model, x, x[y == target], target, Site(meta["site"]), frozenset(meta["critical_units"]),
                   case["hidden"], case["n_critical"], case["n_controls"], case["seed"])


def _ablation(ablation: Literal["zero", "mean", "resample"], planted: Planted, generator: torch.Generator) -> Answer:
    # mean and resample ablation draw from all classes (a detector of the target class sits near its
    # own mean on target inputs, so target-only reference data would hide it)
    importance = unit_importance(planted.model, planted.target_inputs, planted.site, target_log_prob(planted.target),
                                 reference=planted.inputs, ablation=ablation, seed=planted.seed)
    return Answer(tuple(importance.top(planted.k)))


def _random(planted: Planted, generator: torch.Generator) -> Answer:
    return Answer(tuple(torch.randperm(planted.n_units, generator=generator)[:planted.k].tolist()))


def _score(answer: Answer, planted: Planted) -> dict[str, float]:
    units = list(answer.units)
    found = Finding("units", f"units {units} carry class {planted.target}", site=planted.site, units=units,
                    target=planted.target)
    check = validate(found, planted.model, planted.target_inputs, n_controls=planted.n_controls, seed=planted.seed)
    hits = len(set(units) & planted.critical_units)
    return {"precision_at_k": hits / planted.k, "validated": float(check.validated)}


GAME = register(Game(
    name="ablation",
    item="Neurons / perturbation & ablation",
    description=(f"A digits MLP whose target class reads only from {N_CRITICAL} planted units of its last hidden "
                 f"layer ({HIDDEN} units). Methods name {N_CRITICAL} units; scored by overlap with the planted "
                 "units and by whether an intervention against random units of the same count validates them."),
    metrics=(
        Metric("precision_at_k", chance=N_CRITICAL / HIDDEN, bar=0.75,
               description="fraction of the named units that are planted critical units"),
        Metric("validated", chance=0.05, bar=0.8,
               description="validate(): ablating the named units beats random units (p < 0.05, effect CI > 0)"),
    ),
    cases=_cases,
    build=_build,
    methods={"zero-ablation": partial(_ablation, "zero"), "mean-ablation": partial(_ablation, "mean"),
             "resample-ablation": partial(_ablation, "resample"), "random": _random},
    score=_score,
    baselines=frozenset({"random"}),
    order=10,
))
