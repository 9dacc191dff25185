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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...core.sites import Site
from ...evidence.ranks import spearman
from ...neurons.frivolous import frivolous_units
from ...neurons.polysemantic import polysemanticity
from ..zoo.data import digits16
from ..zoo.hazards import PRUNE_TOLERANCE, planted_hazards, superposed_units
from ..zoo.superposition import sample_features
from .base import Game, Metric, register

__all__ = ["HazardsPlanted", "HazardLabels", "HazardsAnswer", "precision_recall"]

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


@dataclass(frozen=True, eq=False)
class HazardsPlanted:
    """One case: the hazards MLP with its key (dead, duplicated, prunable units) and the superposition toy."""

    model: nn.Module
    inputs: Tensor  # the test digits the hazard report runs on
    site: Site
    n_units: int
    dead: frozenset[int]
    duplicated: frozenset[frozenset[int]]
    prunable: frozenset[int]
    toy: nn.Module
    toy_site: Site
    features: Tensor  # (n_samples, n_features) sparse feature draws fed to the toy
    features_per_unit: tuple[int, ...]  # the key: how many features each toy unit carries
    n_features: int
    seed: int


@dataclass(frozen=True)
class HazardLabels:
    """Every unit of the hazards MLP a method calls dead, redundant (as pairs) or prunable."""

    dead: frozenset[int]
    pairs: frozenset[frozenset[int]]
    prunable: frozenset[int]


@dataclass(frozen=True)
class HazardsAnswer:
    """A method's labels (``None``: it labels no units) and its per-unit polysemanticity scores."""

    labels: HazardLabels | None
    effective: tuple[float, ...]  # effective number of features per toy unit
    count: tuple[int, ...] | None  # thresholded feature count per toy unit (``None``: not scored)


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "n_dead": 4, "n_duplicated": 4, "n_idle": 4, "n_features": N_FEATURES,
             "d_hidden": D_HIDDEN, "n_samples": 2000 if quick else 4000}]


def _build(case: Mapping[str, Any]) -> HazardsPlanted:
    model, meta = planted_hazards(case["seed"], n_dead=case["n_dead"], n_duplicated=case["n_duplicated"],
                                  n_idle=case["n_idle"])
    toy, toy_meta = superposed_units(case["seed"], n_features=case["n_features"], d_hidden=case["d_hidden"])
    x, _ = digits16("test")
    features = sample_features(case["seed"] + 10_000, case["n_samples"], case["n_features"], SPARSITY)
    return HazardsPlanted(
        model, x, Site(meta["site"]), int(meta["n_units"]), frozenset(meta["dead"]),
        frozenset(frozenset(p) for p in meta["duplicated"]), frozenset(meta["prunable"]),
        toy, Site(toy_meta["site"]), features, tuple(toy_meta["features_per_unit"]), case["n_features"], case["seed"])


def _hazard_report(planted: HazardsPlanted, generator: torch.Generator) -> HazardsAnswer:
    report = frivolous_units(planted.model, planted.inputs, planted.site, tolerance=PRUNE_TOLERANCE)
    labels = HazardLabels(frozenset(torch.nonzero(report.dead).flatten().tolist()),
                          frozenset(frozenset(p) for p in report.redundant_pairs()),
                          frozenset(torch.nonzero(report.prunable).flatten().tolist()))
    poly = polysemanticity(planted.toy, planted.features, planted.toy_site, planted.features)
    return HazardsAnswer(labels, tuple(poly.effective.tolist()), tuple(poly.count.tolist()))


def _discovered_polysemanticity(planted: HazardsPlanted, generator: torch.Generator) -> HazardsAnswer:
    # no features given: k-means clusters of the activations stand in for them
    found = polysemanticity(planted.toy, planted.features, planted.toy_site, seed=planted.seed)
    return HazardsAnswer(None, tuple(found.effective.tolist()), None)


def _random(planted: HazardsPlanted, generator: torch.Generator) -> HazardsAnswer:
    """Coin flips per unit, random pairs (as many as planted), random scores."""
    n = planted.n_units
    dead = frozenset(torch.nonzero(torch.rand(n, generator=generator) < _COIN).flatten().tolist())
    prunable = frozenset(torch.nonzero(torch.rand(n, generator=generator) < _COIN).flatten().tolist())
    order = torch.randperm(n, generator=generator).tolist()
    pairs = frozenset(frozenset(order[i:i + 2]) for i in range(0, 2 * len(planted.duplicated), 2))
    d_hidden = len(planted.features_per_unit)
    effective = torch.rand(d_hidden, generator=generator).tolist()
    count = torch.randint(1, planted.n_features, (d_hidden,), generator=generator).tolist()
    return HazardsAnswer(HazardLabels(dead, pairs, prunable), tuple(effective), tuple(count))


def _score(answer: HazardsAnswer, planted: HazardsPlanted) -> dict[str, float]:
    known = list(planted.features_per_unit)
    scores: dict[str, float] = {}
    if answer.labels is not None:
        for name, found, truth in (("dead", answer.labels.dead, planted.dead),
                                   ("redundant", answer.labels.pairs, planted.duplicated),
                                   ("prunable", answer.labels.prunable, planted.prunable)):
            scores[f"{name}_precision"], scores[f"{name}_recall"] = precision_recall(set(found), set(truth))
    scores["polysemanticity_spearman"] = spearman(list(answer.effective), known)
    if answer.count is not None:
        scores["feature_count_spearman"] = spearman(list(answer.count), known)
    return scores


GAME = register(Game(
    name="planted-hazards",
    item="Neurons / hazards (polysemantic, frivolous)",
    description=("A digits MLP whose first hidden layer (76 units) holds planted dead units, duplicated units "
                 "(copies with split outgoing weights) and idle units (zero outgoing weights), plus every unit "
                 "training left dead; methods label each unit, scored by precision and recall per hazard. And "
                 f"a toy model of superposition ({N_FEATURES} features in {D_HIDDEN} dimensions, weak loadings "
                 "pruned): methods score each hidden dimension's polysemanticity, scored by Spearman "
                 "correlation with its exact number of features."),
    metrics=(
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
    ),
    cases=_cases,
    build=_build,
    methods={"hazard-report": _hazard_report, "discovered-polysemanticity": _discovered_polysemanticity,
             "random": _random},
    score=_score,
    baselines=frozenset({"random"}),
    order=20,
))
