"""Game: find the units whose removal hurts a target class most (Neurons / perturbation & ablation).

Each case is a digits MLP whose target class reads only from a planted set of ``k`` hidden units
(`planted_critical_units`). A method names ``k`` units; the score is the overlap with the planted
set (chance ``k / n_units``) and whether `validate` confirms the named units against random ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch

from ...core.sites import Site
from ...evidence import Finding, target_log_prob, validate
from ...neurons import unit_importance
from ..zoo.classifiers import planted_critical_units
from ..zoo.data import digits16
from .base import Game, Metric, case_generator

__all__ = ["AblationGame"]

N_CRITICAL, HIDDEN = 4, 32
_KINDS: dict[str, Literal["zero", "mean", "resample"]] = {
    "zero-ablation": "zero", "mean-ablation": "mean", "resample-ablation": "resample"}


class AblationGame(Game):
    name = "ablation"
    item = "Neurons / perturbation & ablation"
    description = (f"A digits MLP whose target class reads only from {N_CRITICAL} planted units of its last hidden "
                   f"layer ({HIDDEN} units). Methods name {N_CRITICAL} units; scored by overlap with the planted "
                   "units and by whether an intervention against random units of the same count validates them.")
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("precision_at_k", chance=N_CRITICAL / HIDDEN, bar=0.75,
               description="fraction of the named units that are planted critical units"),
        Metric("validated", chance=0.05, bar=0.8,
               description="validate(): ablating the named units beats random units (p < 0.05, effect CI > 0)"),
    )
    methods = ("zero-ablation", "mean-ablation", "resample-ablation", "random")
    baselines = frozenset({"random"})

    def cases(self, seed: int, quick: bool) -> list[dict[str, Any]]:
        return [{"seed": seed, "n_critical": N_CRITICAL, "hidden": HIDDEN, "n_controls": 49 if quick else 99}]

    def play(self, method: str, case: Mapping[str, Any]) -> dict[str, float]:
        self.check_method(method)
        model, meta = planted_critical_units(case["seed"], n_critical=case["n_critical"], hidden=case["hidden"])
        x, y = digits16("test")
        target = int(meta["target_class"])
        x_target = x[y == target]
        k, site = case["n_critical"], Site(meta["site"])
        if method in _KINDS:
            # mean and resample ablation draw from all classes (a detector of the target class sits
            # near its own mean on target inputs, so target-only reference data would hide it)
            importance = unit_importance(model, x_target, site, target_log_prob(target), reference=x,
                                         ablation=_KINDS[method], seed=case["seed"])
            units = importance.top(k)
        else:  # "random"
            gen = case_generator(self.name, method, case)
            units = torch.randperm(case["hidden"], generator=gen)[:k].tolist()
        found = Finding("units", f"units {units} carry class {target}", site=site, units=units, target=target)
        check = validate(found, model, x_target, n_controls=case["n_controls"], seed=case["seed"])
        hits = len(set(units) & set(meta["critical_units"]))
        return {"precision_at_k": hits / k, "validated": float(check.validated)}
