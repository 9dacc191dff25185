"""Game: known task weights (Weights / continual learning as a lens: EWC's Fisher, MAS, pruning scores).

Each case is a planted two-task network (`bench.zoo.task_weights`): task A's logits are computed by a
sparse block of weights, task B's by another, and a decoy of large weights (block B is twice block A's
scale, decoy units four times) cannot change task A's output. A method scores every weight for task A
from task A's data, seen through task A's head (the multi-head continual-learning setting); the score
is the AUROC of those scores for "belongs to task A" over the network's connections (its non-zero
weights), and the same for task B. Weight magnitude is in the table to show it fail; random scores
are the chance baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...evidence.ranks import auroc
from ...weights import importance
from ..zoo.task_weights import TaskWeights, two_task_network
from .base import Game, Metric, register

__all__ = ["TaskWeightsAnswer", "task_auroc"]

#: Cross-talk between the blocks: none (the blocks are exactly separate) and small (std 0.05).
LEAKS = (0.0, 0.05)


@dataclass(frozen=True)
class TaskWeightsAnswer:
    """A method's importance of every weight of the network (``{"0.weight": ..., "2.weight": ...}``) per task."""

    task_a: dict[str, Tensor]
    task_b: dict[str, Tensor]


def task_auroc(scores: Mapping[str, Tensor], truth: Mapping[str, Tensor], population: Mapping[str, Tensor]) -> float:
    """AUROC of ``scores`` for ``truth`` over the weights in ``population`` (ties count half).

    Example:
        >>> s = {"w": torch.tensor([3.0, 0.0, 1.0, 2.0])}
        >>> task_auroc(s, {"w": torch.tensor([True, False, False, True])}, {"w": torch.tensor([True, True, True, True])})
        1.0
    """
    keep = [population[n].flatten() for n in truth]
    flat_scores = torch.cat([scores[n].flatten()[k] for n, k in zip(truth, keep, strict=True)])
    flat_truth = torch.cat([truth[n].flatten()[k] for n, k in zip(truth, keep, strict=True)])
    return float(auroc(flat_scores.double().numpy(), flat_truth.numpy()))


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "d_task": 8, "n_block": 8 if quick else 16, "n_decoy": 4, "n_classes": 3,
             "n_samples": 256 if quick else 1024, "leak": leak} for leak in LEAKS]


def _build(case: Mapping[str, Any]) -> TaskWeights:
    return two_task_network(case["seed"], d_task=case["d_task"], n_block=case["n_block"], n_decoy=case["n_decoy"],
                            n_classes=case["n_classes"], n_samples=case["n_samples"], leak=case["leak"])


def _scored(method: str, **options: Any):
    def run(planted: TaskWeights, generator: torch.Generator) -> TaskWeightsAnswer:
        out = {}
        for task, labels in (("a", planted.labels_a), ("b", planted.labels_b)):
            scores = importance(planted.head(task), planted.inputs, labels, method=method, **options).scores
            out[task] = {n.removeprefix("net."): s for n, s in scores.items()}
        return TaskWeightsAnswer(out["a"], out["b"])
    return run


def _random(planted: TaskWeights, generator: torch.Generator) -> TaskWeightsAnswer:
    draw = {task: {n: torch.rand(p.shape, generator=generator) for n, p in planted.net.named_parameters()}
            for task in ("a", "b")}
    return TaskWeightsAnswer(draw["a"], draw["b"])


def _score(answer: TaskWeightsAnswer, planted: TaskWeights) -> dict[str, float]:
    suffix = "_leaky" if planted.leak > 0 else ""
    return {f"task_a_auroc{suffix}": task_auroc(answer.task_a, planted.task_a, planted.nonzero),
            f"task_b_auroc{suffix}": task_auroc(answer.task_b, planted.task_b, planted.nonzero)}


GAME = register(Game(
    name="known-task-weights",
    item="Weights / continual learning as a lens (importance)",
    description=("A two-task MLP, built not trained (biases only in the heads, centring the logits): task A's 3 logits come from a sparse planted block "
                 "(hidden units reading only task A's inputs and writing only to head A), task B's from another "
                 "block at twice the scale, plus decoy units with 4x larger weights that cannot change either "
                 "output (live units with no outgoing weight, dead units with large weights in and out). Each "
                 "method scores every weight from one task's data through that task's head; the score is the AUROC "
                 "for 'belongs to this task' over the network's non-zero weights."),
    metrics=(
        Metric("task_a_auroc", chance=0.5, bar=0.9,
               description="AUROC of the task-A importance for the weights of block A among all non-zero weights"),
        Metric("task_b_auroc", chance=0.5, bar=0.9,
               description="AUROC of the task-B importance for the weights of block B among all non-zero weights"),
        Metric("task_a_auroc_leaky", chance=0.5, bar=0.9,
               description="task_a_auroc with small cross-talk weights (std 0.05) between the blocks: outside "
                           "block A, yet they change task A's output a little"),
        Metric("task_b_auroc_leaky", chance=0.5, bar=0.9, description="task_b_auroc with the same cross-talk"),
    ),
    cases=_cases,
    build=_build,
    methods={"fisher": _scored("fisher"), "fisher-exact": _scored("fisher", variant="exact"),
             "fisher-batched": _scored("fisher", variant="batched"), "mas": _scored("mas"),
             "snip": _scored("snip"), "taylor": _scored("taylor"), "magnitude": _scored("magnitude"),
             "random": _random},
    score=_score,
    baselines=frozenset({"random"}),
    order=130,
))
