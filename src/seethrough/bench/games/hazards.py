"""Game: find the planted neuron hazards (Neurons / hazards: polysemantic and frivolous units).

Each case holds two models with exact answer keys. `planted_hazards`: a digits MLP whose first
hidden layer has planted dead units, duplicated units (copies with split outgoing weights) and
idle units; the method labels every unit dead / redundant (with its partner) / prunable, scored by
precision and recall per hazard against the key. `superposed_units`: the toy model of
superposition with its weak loadings pruned, whose hidden dimensions carry an exact number of
features each; the method scores each unit's polysemanticity from the known features (or, for
"discovered-polysemanticity", from k-means clusters of the activations), scored by Spearman
rank correlation with that number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ...core.sites import Site
from ...evidence.ranks import spearman
from ...neurons.frivolous import frivolous_units
from ...neurons.polysemantic import polysemanticity
from ..zoo.data import digits16
from ..zoo.hazards import PRUNE_TOLERANCE, planted_hazards, superposed_units
from ..zoo.superposition import sample_features
from .base import LegacyGame as Game
from .base import Metric, case_generator

__all__ = ["HazardsGame", "precision_recall"]

N_FEATURES, D_HIDDEN, SPARSITY = 40, 10, 0.9
#: Fraction of units the random baseline flags per hazard.
_COIN = 0.5


def precision_recall(found: set[Any], truth: set[Any]) -> tuple[float, float]:
    """``(precision, recall)`` of ``found`` against ``truth``; an empty side scores 0 (nothing to credit).

    Example:
        >>> precision_recall({1, 2, 3, 4}, {1, 2, 5})
        (0.5, 0.6666666666666666)
    """
    hits = len(found & truth)
    return (hits / len(found) if found else 0.0), (hits / len(truth) if truth else 0.0)


class HazardsGame(Game):
    name = "planted-hazards"
    item = "Neurons / hazards (polysemantic, frivolous)"
    description = ("A digits MLP whose first hidden layer (76 units) holds planted dead units, duplicated units "
                   "(copies with split outgoing weights) and idle units (zero outgoing weights), plus every unit "
                   "training left dead; methods label each unit, scored by precision and recall per hazard. And "
                   f"a toy model of superposition ({N_FEATURES} features in {D_HIDDEN} dimensions, weak loadings "
                   "pruned): methods score each hidden dimension's polysemanticity, scored by Spearman "
                   "correlation with its exact number of features.")
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("dead_precision", chance=0.3, bar=0.9,
               description="fraction of units flagged dead that never fire on any digit (chance: their share)"),
        Metric("dead_recall", chance=_COIN, bar=0.9, description="fraction of dead units flagged"),
        Metric("redundant_precision", chance=0.0, bar=0.9,
               description="fraction of flagged redundant pairs that are planted duplicate pairs"),
        Metric("redundant_recall", chance=0.0, bar=0.9, description="fraction of planted duplicate pairs found"),
        Metric("prunable_precision", chance=0.35, bar=0.85,
               description=f"fraction of units flagged prunable whose removal changes the logits on all digits by "
                           f"at most {PRUNE_TOLERANCE} (relative; chance: their share)"),
        Metric("prunable_recall", chance=_COIN, bar=0.85, description="fraction of prunable units flagged"),
        Metric("polysemanticity_spearman", chance=0.0, bar=0.5,
               description="Spearman correlation of the effective number of features per unit with the known count"),
        Metric("feature_count_spearman", chance=0.0, bar=0.5,
               description="Spearman correlation of the thresholded feature count per unit with the known count"),
    )
    methods = ("hazard-report", "discovered-polysemanticity", "random")
    baselines = frozenset({"random"})

    def cases(self, seed: int, quick: bool) -> list[dict[str, Any]]:
        return [{"seed": seed, "n_dead": 4, "n_duplicated": 4, "n_idle": 4, "n_features": N_FEATURES,
                 "d_hidden": D_HIDDEN, "n_samples": 2000 if quick else 4000}]

    def play(self, method: str, case: Mapping[str, Any]) -> dict[str, float]:
        self.check_method(method)
        model, meta = planted_hazards(case["seed"], n_dead=case["n_dead"], n_duplicated=case["n_duplicated"],
                                      n_idle=case["n_idle"])
        toy, toy_meta = superposed_units(case["seed"], n_features=case["n_features"], d_hidden=case["d_hidden"])
        x, _ = digits16("test")
        features = sample_features(case["seed"] + 10_000, case["n_samples"], case["n_features"], SPARSITY)
        n_units = int(meta["n_units"])
        known = toy_meta["features_per_unit"]
        if method == "discovered-polysemanticity":  # no features given: k-means clusters stand in for them
            found_poly = polysemanticity(toy, features, Site(toy_meta["site"]), seed=case["seed"])
            return {"polysemanticity_spearman": spearman(found_poly.effective.tolist(), known)}
        if method == "hazard-report":
            report = frivolous_units(model, x, Site(meta["site"]), tolerance=PRUNE_TOLERANCE)
            dead = set(torch.nonzero(report.dead).flatten().tolist())
            pairs = {frozenset(p) for p in report.redundant_pairs()}
            prunable = set(torch.nonzero(report.prunable).flatten().tolist())
            poly = polysemanticity(toy, features, Site(toy_meta["site"]), features)
            effective, count = poly.effective.tolist(), poly.count.tolist()
        else:  # "random": coin flips per unit, random pairs, random scores
            gen = case_generator(self.name, method, case)
            dead = set(torch.nonzero(torch.rand(n_units, generator=gen) < _COIN).flatten().tolist())
            prunable = set(torch.nonzero(torch.rand(n_units, generator=gen) < _COIN).flatten().tolist())
            order = torch.randperm(n_units, generator=gen).tolist()
            pairs = {frozenset(order[i:i + 2]) for i in range(0, 2 * case["n_duplicated"], 2)}
            effective = torch.rand(case["d_hidden"], generator=gen).tolist()
            count = torch.randint(1, case["n_features"], (case["d_hidden"],), generator=gen).tolist()
        truth_pairs = {frozenset(p) for p in meta["duplicated"]}
        scores: dict[str, float] = {}
        for name, found, truth in (("dead", dead, set(meta["dead"])), ("redundant", pairs, truth_pairs),
                                   ("prunable", prunable, set(meta["prunable"]))):
            scores[f"{name}_precision"], scores[f"{name}_recall"] = precision_recall(found, truth)
        scores["polysemanticity_spearman"] = spearman(effective, known)
        scores["feature_count_spearman"] = spearman(count, known)
        return scores
