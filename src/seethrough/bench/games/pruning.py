"""Game: planted irrelevance (Weights / frivolous weights: pruning scores).

Each case is a network with planted irrelevant weights (`bench.zoo.irrelevance`): large weights of
idle units (no outgoing weight) and dead units (never fire), beside a sparse teacher block that
defines the labels. A method scores every weight (higher = keep); the game prunes the lowest-scoring
non-zero weights globally and scores the AUROC of the scores for "irrelevant" (low score = irrelevant),
the largest pruned fraction that keeps accuracy within 1 point (over the planted irrelevant fraction:
1.0 = every irrelevant weight could go), and whether that beats random pruning of the same case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...weights import importance, prunable_parameters
from ..zoo.irrelevance import PlantedIrrelevance, planted_irrelevance
from .base import Game, Metric, case_generator, register
from .weights import task_auroc

__all__ = ["PruningAnswer", "largest_sparsity"]

#: The accuracy a pruned network may lose (1 point).
TOLERANCE = 0.01


@dataclass(frozen=True)
class PruningAnswer:
    """A method's score per weight (higher = more important, pruned last)."""

    scores: dict[str, Tensor]


def largest_sparsity(planted: PlantedIrrelevance, scores: Mapping[str, Tensor]) -> float:
    """The largest fraction of non-zero weights whose removal, lowest scores first, keeps accuracy within 1 point.

    Every count of pruned weights is tried (the accuracy need not fall monotonically); ties keep
    parameter order (stable sort).
    """
    names = list(planted.nonzero)
    params = dict(planted.net.named_parameters())
    flat_scores = torch.cat([scores[n].flatten()[planted.nonzero[n].flatten()] for n in names])
    where = [(n, i) for n in names for i in torch.nonzero(planted.nonzero[n].flatten()).flatten().tolist()]
    order = torch.argsort(flat_scores, stable=True).tolist()
    with torch.no_grad():
        dense = float((planted.net(planted.inputs).argmax(1) == planted.labels).float().mean())
    best = 0
    pruned = {n: params[n].detach().clone() for n in names}
    for k in range(len(order) + 1):
        if k:
            name, index = where[order[k - 1]]
            pruned[name].view(-1)[index] = 0.0
        with torch.no_grad():
            out = torch.func.functional_call(planted.net, pruned, (planted.inputs,))
        if float((out.argmax(1) == planted.labels).float().mean()) >= dense - TOLERANCE - 1e-9:
            best = k
    return best / len(order)


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "d_signal": 8, "d_noise": 8, "n_teacher": 16, "n_idle": 8, "n_dead": 4,
             "n_samples": 512 if quick else 2048}]


def _build(case: Mapping[str, Any]) -> PlantedIrrelevance:
    return planted_irrelevance(case["seed"], d_signal=case["d_signal"], d_noise=case["d_noise"],
                               n_teacher=case["n_teacher"], n_idle=case["n_idle"], n_dead=case["n_dead"],
                               n_samples=case["n_samples"])


def _scored(method: str, **options: Any):
    def run(planted: PlantedIrrelevance, generator: torch.Generator) -> PruningAnswer:
        return PruningAnswer(importance(planted.net, planted.inputs, planted.labels, method=method, **options).scores)
    return run


def _structured(method: str):
    """Unit-level (structured) scores: every weight of a hidden unit's row gets the row's total ``method`` score.

    The rows are those `weights.prune` prunes with ``structure="units"`` (every Linear but the output layer);
    the output layer keeps its per-weight scores. Pruning by these scores removes whole units first.
    """
    def run(planted: PlantedIrrelevance, generator: torch.Generator) -> PruningAnswer:
        scores = dict(importance(planted.net, planted.inputs, planted.labels, method=method).scores)
        for name in prunable_parameters(planted.net, structure="units"):
            s = scores[name]
            scores[name] = s.reshape(s.shape[0], -1).sum(1, keepdim=True).expand(s.shape[0], s[0].numel()).reshape(
                s.shape).clone()
        return PruningAnswer(scores)
    return run


def _random(planted: PlantedIrrelevance, generator: torch.Generator) -> PruningAnswer:
    return PruningAnswer({n: torch.rand(p.shape, generator=generator) for n, p in planted.net.named_parameters()})


def _score(answer: PruningAnswer, planted: PlantedIrrelevance) -> dict[str, float]:
    n_nonzero = sum(int(m.sum()) for m in planted.nonzero.values())
    planted_fraction = sum(int(m.sum()) for m in planted.irrelevant.values()) / n_nonzero
    sparsity = largest_sparsity(planted, answer.scores)
    # random pruning of the same case, one draw seeded by the case (the same for every method)
    gen = case_generator("planted-irrelevance", "random-pruning", {"n": n_nonzero, "seed": planted_fraction})
    control = largest_sparsity(planted, {n: torch.rand(p.shape, generator=gen)
                                         for n, p in planted.net.named_parameters()})
    return {"irrelevant_auroc": task_auroc({n: -s for n, s in answer.scores.items()}, planted.irrelevant,
                                           planted.nonzero),
            "prunable_ratio": sparsity / planted_fraction,
            "beats_random_pruning": float(sparsity > control)}


GAME = register(Game(
    name="planted-irrelevance",
    item="Weights / frivolous weights (pruning)",
    description=("A network built, not trained: a sparse teacher block on 8 signal inputs defines 3 balanced "
                 "classes; 8 idle units read all 16 inputs (8 pure noise) with 3x larger weights and write nowhere, "
                 "and 4 dead units never fire yet have large weights in and out. Methods score every weight; the "
                 "lowest-scoring non-zero weights are pruned globally. Scored: AUROC of low scores for the planted "
                 "irrelevant weights; the largest pruned fraction keeping accuracy within 1 point, over the "
                 "irrelevant fraction; and whether it beats random pruning of the same case. The -units rows are "
                 "structured: each hidden unit's weights share their row's total score, so whole units go first."),
    metrics=(
        Metric("irrelevant_auroc", chance=0.5, bar=0.9,
               description="AUROC of (minus) the importance for the planted irrelevant weights among non-zero weights"),
        Metric("prunable_ratio", chance=0.0, bar=1.0,
               description="largest pruned fraction with accuracy within 1 point, divided by the planted irrelevant "
                           "fraction (1 = all irrelevant weights pruned; chance: see the random row)"),
        Metric("beats_random_pruning", chance=0.5, bar=1.0,
               description="1 when the method prunes a larger fraction than random pruning of the same case "
                           "(bar 1.0: on every case)"),
    ),
    cases=_cases,
    build=_build,
    methods={"magnitude": _scored("magnitude"), "snip": _scored("snip"), "taylor": _scored("taylor"),
             "fisher": _scored("fisher"), "mas": _scored("mas"), "taylor-units": _structured("taylor"),
             "magnitude-units": _structured("magnitude"), "random": _random},
    score=_score,
    baselines=frozenset({"random"}),
    order=131,
))
