"""Game: known task weights (Weights / continual learning as a lens: EWC's Fisher, SI, MAS, pruning scores).

Each case is a planted two-task network (`bench.zoo.task_weights`): task A's logits are computed by a
sparse block of weights, task B's by another, and a decoy of large weights (block B is twice block A's
scale, decoy units four times) cannot change task A's output. A method scores every weight for task A
from task A's data, seen through task A's head (the multi-head continual-learning setting); the score
is the AUROC of those scores for "belongs to task A" over the network's connections (its non-zero
weights), and the same for task B. Weight magnitude is in the table to show it fail; random scores
are the chance baseline. Synaptic Intelligence needs a training run: its scores are the path
integrals of a retraining of the network (tasks A then B, each through its head) from a perturbed start.

The forgetting cases (`ContinualCase`) train a digits MLP on task A, then task B
(`bench.zoo.continual`), with each method's importance as the quadratic penalty of
`seethrough.weights.train_sequential` (``fisher`` = EWC; ``random`` = EWC's Fisher shuffled over the
weights at EWC's strength; ``naive`` = no penalty), and score how much of naive fine-tuning's
forgetting of task A each penalty prevents, in the domain-incremental ``permuted`` setting and the
``class-incremental`` one (shown failing, as expected of every regularisation penalty there).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...evidence.ranks import auroc
from ...weights import importance, train_sequential
from ..zoo.cache import cached
from ..zoo.continual import SETTINGS, continual_mlp, digits_tasks
from ..zoo.task_weights import TaskWeights, two_task_network
from .base import Game, GameError, Metric, register

__all__ = ["TaskWeightsAnswer", "ContinualCase", "ForgettingAnswer", "task_auroc", "continual_accuracy",
           "PENALTY_OF"]

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


@dataclass(frozen=True)
class ContinualCase:
    """A forgetting case: train `bench.zoo.continual`'s MLP of ``seed`` on task A then B of ``setting``."""

    seed: int
    setting: str


@dataclass(frozen=True)
class ForgettingAnswer:
    """``accuracy[i][j]``: task j's test accuracy after training task i, with the method's penalty and without."""

    accuracy: tuple[tuple[float, ...], ...]
    naive: tuple[tuple[float, ...], ...]


#: Each method's penalty in the forgetting cases: (train_sequential penalty, Fisher variant, strength). The
#: strengths were chosen on development seeds 100-102 of the permuted setting (the best average accuracy over a
#: grid, /docs/weights.md); the game scores seeds 0.. and uses the same strengths in the class-incremental setting.
PENALTY_OF: dict[str, tuple[str, str, float]] = {
    "fisher": ("ewc", "empirical", 300.0), "fisher-exact": ("ewc", "exact", 30.0),
    "fisher-batched": ("ewc", "batched", 10000.0), "si": ("si", "empirical", 3.0), "mas": ("mas", "empirical", 0.01),
    "snip": ("snip", "empirical", 3000.0), "taylor": ("taylor", "empirical", 300.0),
    "magnitude": ("magnitude", "empirical", 0.1), "random": ("random", "empirical", 300.0),
    "naive": ("none", "empirical", 0.0),
}
_CONTINUAL_VERSION = 1


def continual_accuracy(seed: int, setting: str, penalty: str, strength: float, variant: str = "empirical", *,
                       epochs: int = 10, lr: float = 1e-2) -> tuple[tuple[float, ...], ...]:
    """The accuracy matrix of one two-task digits run (`bench.zoo.continual`), trained once per config and cached."""
    config = {"version": _CONTINUAL_VERSION, "seed": seed, "setting": setting, "penalty": penalty,
              "strength": float(strength), "variant": variant, "epochs": epochs, "lr": float(lr)}
    train_tasks, test_tasks = digits_tasks(seed, setting)

    def train(model: torch.nn.Module) -> dict[str, Any]:
        result = train_sequential(model, train_tasks, penalty=penalty, strength=strength, variant=variant,
                                  epochs=epochs, lr=lr, seed=seed, eval_tasks=test_tasks)
        with torch.no_grad():
            for p, q in zip(model.parameters(), result.model.parameters(), strict=True):
                p.copy_(q)
        return {"accuracy": [list(row) for row in result.accuracy]}

    _, meta = cached("sequential_digits", config, lambda: continual_mlp(seed), train)
    return tuple(tuple(float(a) for a in row) for row in meta["accuracy"])


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [*({"seed": seed, "d_task": 8, "n_block": 8 if quick else 16, "n_decoy": 4, "n_classes": 3,
               "n_samples": 256 if quick else 1024, "leak": leak} for leak in LEAKS),
            *({"seed": seed, "setting": setting, "version": _CONTINUAL_VERSION} for setting in SETTINGS)]


def _build(case: Mapping[str, Any]) -> TaskWeights | ContinualCase:
    if "setting" in case:
        return ContinualCase(case["seed"], case["setting"])
    return two_task_network(case["seed"], d_task=case["d_task"], n_block=case["n_block"], n_decoy=case["n_decoy"],
                            n_classes=case["n_classes"], n_samples=case["n_samples"], leak=case["leak"])


def _method(name: str, scores):
    """The game's method ``name``: ``scores`` on a planted network, its penalty on a forgetting case."""
    def run(planted: TaskWeights | ContinualCase, generator: torch.Generator) -> TaskWeightsAnswer | ForgettingAnswer:
        if isinstance(planted, ContinualCase):
            penalty, variant, strength = PENALTY_OF[name]
            naive = continual_accuracy(planted.seed, planted.setting, "none", 0.0)
            return ForgettingAnswer(continual_accuracy(planted.seed, planted.setting, penalty, strength, variant), naive)
        return scores(planted, generator)
    return run


def _scored(method: str, **options: Any):
    def run(planted: TaskWeights, generator: torch.Generator) -> TaskWeightsAnswer:
        out = {}
        for task, labels in (("a", planted.labels_a), ("b", planted.labels_b)):
            scores = importance(planted.head(task), planted.inputs, labels, method=method, **options).scores
            out[task] = {n.removeprefix("net."): s for n, s in scores.items()}
        return TaskWeightsAnswer(out["a"], out["b"])
    return run


def _si(planted: TaskWeights, generator: torch.Generator) -> TaskWeightsAnswer:
    """SI's importances from retraining the network from a perturbed start: task A, then B, each through its head.

    Every connection is scaled by ``1 + 0.5 ε`` (ε standard normal, from the case's generator); only
    the network's connections train (absent weights stay absent), with Adam (lr 0.01, 20 epochs).
    """
    net = copy.deepcopy(planted.net)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1 + 0.5 * torch.randn(p.shape, generator=generator))
    n = planted.n_classes
    run = train_sequential(net, [(planted.inputs, planted.labels_a), (planted.inputs, planted.labels_b)],
                           heads=[(0, n), (n, 2 * n)], trainable=planted.nonzero, epochs=20, lr=1e-2, seed=0)
    return TaskWeightsAnswer(run.si[0].scores, run.si[1].scores)


def _constant(planted: TaskWeights, generator: torch.Generator) -> TaskWeightsAnswer:
    """Naive fine-tuning weighs no weight above another: constant scores (AUROC exactly 0.5 by ties)."""
    zeros = {n: torch.zeros(p.shape) for n, p in planted.net.named_parameters()}
    return TaskWeightsAnswer(zeros, zeros)


def _random(planted: TaskWeights, generator: torch.Generator) -> TaskWeightsAnswer:
    draw = {task: {n: torch.rand(p.shape, generator=generator) for n, p in planted.net.named_parameters()}
            for task in ("a", "b")}
    return TaskWeightsAnswer(draw["a"], draw["b"])


def _score(answer: TaskWeightsAnswer | ForgettingAnswer, planted: TaskWeights | ContinualCase) -> dict[str, float]:
    if isinstance(planted, ContinualCase):
        if not isinstance(answer, ForgettingAnswer):
            raise GameError(f"a forgetting case needs a ForgettingAnswer, got {type(answer).__name__}.")
        suffix = "" if planted.setting == "permuted" else "_" + planted.setting.replace("-", "_")
        naive_forgetting = answer.naive[0][0] - answer.naive[1][0]
        if naive_forgetting < 0.05:
            raise GameError(f"naive fine-tuning forgot only {naive_forgetting:.3f} of task A in the {planted.setting} "
                            f"case of seed {planted.seed}: nothing to prevent, so the case cannot score a method.")
        forgetting = answer.accuracy[0][0] - answer.accuracy[1][0]
        return {f"forgetting_prevented{suffix}": 1.0 - forgetting / naive_forgetting,
                f"average_accuracy{suffix}": sum(answer.accuracy[1]) / len(answer.accuracy[1])}
    if not isinstance(answer, TaskWeightsAnswer):
        raise GameError(f"a planted-network case needs a TaskWeightsAnswer, got {type(answer).__name__}.")
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
                 "for 'belongs to this task' over the network's non-zero weights (SI: path integrals of a retraining "
                 "from a perturbed start). Forgetting cases train a digits MLP on task A then B with each "
                 "method's importance as the penalty (random = shuffled Fisher, naive = none) and score the "
                 "share of naive forgetting prevented, permuted (domain-incremental) and class-incremental."),
    metrics=(
        Metric("task_a_auroc", chance=0.5, bar=0.9,
               description="AUROC of the task-A importance for the weights of block A among all non-zero weights"),
        Metric("task_b_auroc", chance=0.5, bar=0.9,
               description="AUROC of the task-B importance for the weights of block B among all non-zero weights"),
        Metric("task_a_auroc_leaky", chance=0.5, bar=0.9,
               description="task_a_auroc with small cross-talk weights (std 0.05) between the blocks: outside "
                           "block A, yet they change task A's output a little"),
        Metric("task_b_auroc_leaky", chance=0.5, bar=0.9, description="task_b_auroc with the same cross-talk"),
        Metric("forgetting_prevented", chance=0.0, bar=0.5,
               description="permuted digits (domain-incremental): 1 - (task-A test accuracy lost when training task "
                           "B with the method's penalty) / (the loss under naive fine-tuning); naive = 0"),
        Metric("average_accuracy", chance=0.1, bar=0.83,
               description="permuted digits: mean test accuracy of tasks A and B after both (bar: Avalanche's EWC "
                           "target on permuted MNIST)"),
        Metric("forgetting_prevented_class_incremental", chance=0.0, bar=0.5,
               description="forgetting_prevented with digits 0-4 then 5-9 in one 10-way head: regularisation is "
                           "expected to fail here (the honest baseline)"),
        Metric("average_accuracy_class_incremental", chance=0.1, bar=0.83,
               description="average_accuracy in the class-incremental setting"),
    ),
    cases=_cases,
    build=_build,
    methods={"fisher": _method("fisher", _scored("fisher")),
             "fisher-exact": _method("fisher-exact", _scored("fisher", variant="exact")),
             "fisher-batched": _method("fisher-batched", _scored("fisher", variant="batched")),
             "si": _method("si", _si), "mas": _method("mas", _scored("mas")),
             "snip": _method("snip", _scored("snip")), "taylor": _method("taylor", _scored("taylor")),
             "magnitude": _method("magnitude", _scored("magnitude")), "random": _method("random", _random),
             "naive": _method("naive", _constant)},
    score=_score,
    baselines=frozenset({"random", "naive"}),
    order=130,
))
