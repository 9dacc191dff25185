"""Game: mask recovery (Weights / weight masking, Csordás et al. 2021).

Each case is a planted two-task network with a shared block (`bench.zoo.task_weights`, ``n_shared``):
task A uses block A, the shared units' incoming weights and their weights into head A; task B the
same with B. A method returns a binary mask per task over the whole network, learned from that task's
data through that task's head. Scored over the network's non-zero weights: the IoU of task A's mask
with task A's planted weights; task A's accuracy with its mask applied and task B's (which must fall
to chance); the shared fraction of the two masks against the planted one; and the stability of task
A's mask across 5 seeds (mean pairwise Jaccard); the IoU of the weights both masks keep with the planted
shared weights; and whether task A's mask survives `weights.validate_mask` (applied and ablated, both
tasks, against random masks of its size, on held-out inputs).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...weights import correct, learn_mask, validate_mask
from ..zoo import generator as zoo_generator
from ..zoo.task_weights import TaskWeights, two_task_network
from .base import Game, Metric, register

__all__ = ["MaskAnswer", "jaccard", "mask_validated"]

N_STABILITY = 5
#: Random masks of the same size per parameter that a mask's validation compares it with.
N_CONTROLS = 100


@dataclass(frozen=True)
class MaskAnswer:
    """Binary masks per task (``{parameter name of the network: bool tensor}``) and task A's from 5 seeds."""

    task_a: dict[str, Tensor]
    task_b: dict[str, Tensor]
    task_a_seeds: tuple[dict[str, Tensor], ...]


def jaccard(a: Mapping[str, Tensor], b: Mapping[str, Tensor], population: Mapping[str, Tensor]) -> float:
    """|a ∩ b| / |a ∪ b| over the weights in ``population`` (1 when both are empty).

    Example:
        >>> m = lambda *v: {"w": torch.tensor(v)}
        >>> jaccard(m(True, True, False), m(True, False, True), m(True, True, True))
        0.3333333333333333
    """
    inter = sum(int((a[n] & b[n] & population[n]).sum()) for n in population)
    union = sum(int(((a[n] | b[n]) & population[n]).sum()) for n in population)
    return inter / union if union else 1.0


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "d_task": 8, "n_block": 8, "n_decoy": 4, "n_shared": 4, "n_classes": 3,
             "n_samples": 256 if quick else 1024}]


def _build(case: Mapping[str, Any]) -> TaskWeights:
    return two_task_network(case["seed"], d_task=case["d_task"], n_block=case["n_block"], n_decoy=case["n_decoy"],
                            n_classes=case["n_classes"], n_samples=case["n_samples"], n_shared=case["n_shared"])


def _mask(planted: TaskWeights, task: str, seed: int) -> dict[str, Tensor]:
    labels = planted.labels_a if task == "a" else planted.labels_b
    result = learn_mask(planted.head(task), planted.inputs, labels, seed=seed)
    return {n.removeprefix("net."): m for n, m in result.binary().items()}


def _learn_mask(planted: TaskWeights, generator: torch.Generator) -> MaskAnswer:
    seeds = tuple(_mask(planted, "a", s) for s in range(N_STABILITY))
    return MaskAnswer(seeds[0], _mask(planted, "b", 0), seeds)


def _random(planted: TaskWeights, generator: torch.Generator) -> MaskAnswer:
    """Random masks keeping each task's planted share of the non-zero weights (chance IoU)."""
    def draw(truth: Mapping[str, Tensor]) -> dict[str, Tensor]:
        share = sum(int(t.sum()) for t in truth.values()) / sum(int(m.sum()) for m in planted.nonzero.values())
        return {n: torch.rand(m.shape, generator=generator) < share for n, m in planted.nonzero.items()}
    seeds = tuple(draw(planted.task_a) for _ in range(N_STABILITY))
    return MaskAnswer(seeds[0], draw(planted.task_b), seeds)


def _accuracy(planted: TaskWeights, mask: Mapping[str, Tensor], task: str) -> float:
    params = {n: p.detach() * mask[n].to(p.dtype) for n, p in planted.net.named_parameters()}
    with torch.no_grad():
        out = torch.func.functional_call(planted.head(task), {f"net.{n}": p for n, p in params.items()},
                                         (planted.inputs,))
    labels = planted.labels_a if task == "a" else planted.labels_b
    return float((out.argmax(1) == labels).float().mean())


def mask_validated(planted: TaskWeights, mask: Mapping[str, Tensor]) -> float:
    """1.0 when "``mask`` implements task A" survives `validate_mask` on held-out inputs, else 0.0.

    The held-out inputs are drawn afresh (uniform, like the case's, from the case's seed) and labelled
    by the network; tasks are read through their heads' columns of the whole network.
    """
    x = torch.rand(planted.inputs.shape, generator=zoo_generator(planted.seed, "mask-validation"))
    k = planted.n_classes
    with torch.no_grad():
        out = planted.net(x)
    tasks = {"a": (x, correct(out[:, :k].argmax(1), columns=(0, k))),
             "b": (x, correct(out[:, k:].argmax(1), columns=(k, 2 * k)))}
    result = validate_mask(planted.net, mask, tasks, task="a", n_controls=N_CONTROLS, population=planted.nonzero)
    return float(result.validated)


def _score(answer: MaskAnswer, planted: TaskWeights) -> dict[str, float]:
    pop = planted.nonzero
    both = {n: planted.task_a[n] & planted.task_b[n] for n in pop}
    either = {n: planted.task_a[n] | planted.task_b[n] for n in pop}
    planted_shared = sum(int(both[n].sum()) for n in pop) / sum(int(either[n].sum()) for n in pop)
    found_shared = {n: answer.task_a[n] & answer.task_b[n] for n in pop}
    pairs = list(itertools.combinations(answer.task_a_seeds, 2))
    return {"task_a_iou": jaccard(answer.task_a, planted.task_a, pop),
            "task_a_accuracy": _accuracy(planted, answer.task_a, "a"),
            "task_b_accuracy_under_mask_a": _accuracy(planted, answer.task_a, "b"),
            "shared_fraction_error": abs(jaccard(answer.task_a, answer.task_b, pop) - planted_shared),
            "shared_iou": jaccard(found_shared, both, pop),
            "stability": sum(jaccard(a, b, pop) for a, b in pairs) / len(pairs),
            "validated": mask_validated(planted, answer.task_a)}


GAME = register(Game(
    name="mask-recovery",
    item="Weights / weight masking",
    description=("The planted two-task network of known-task-weights plus 4 shared units reading every input and "
                 "writing to both heads. A mask is learned per task over the whole frozen network, from that "
                 "task's data through its head. Scored over the non-zero weights: IoU of task A's mask with task "
                 "A's planted weights (block A, the shared units' inputs, their weights into head A), task A's "
                 "accuracy under its mask and task B's (should fall to chance), the error of the masks' shared "
                 "fraction against the planted one and the IoU of the weights both keep with the planted shared "
                 "weights, task A's mask stability over 5 seeds (pairwise Jaccard), and whether task A's mask is "
                 "validated by intervention against random masks of its size (validate_mask, held-out inputs)."),
    metrics=(
        Metric("task_a_iou", chance=0.2, bar=0.8,
               description="IoU of task A's binary mask with its planted weights (chance: a random mask of the "
                           "planted share, measured 0.2 by the random row)"),
        Metric("task_a_accuracy", chance=1 / 3, bar=0.95, description="task A's accuracy with its mask applied"),
        Metric("task_b_accuracy_under_mask_a", chance=1.0, bar=0.5, higher_is_better=False,
               description="task B's accuracy with task A's mask applied: the mask must not carry task B (chance "
                           "here: a keep-everything mask keeps task B at 1.0; random masks also lose it)"),
        Metric("shared_fraction_error", chance=0.75, bar=0.1, higher_is_better=False,
               description="|Jaccard of the two tasks' masks − planted shared fraction| (chance: a keep-everything "
                           "mask pair is off by about 0.75; caveat, measured: two independent random masks keeping "
                           "shares p_a, p_b of the weights have expected Jaccard p_a p_b / (p_a + p_b - p_a p_b), "
                           "0.20-0.22 on seeds 0-2, and the planted shared fraction is 0.22-0.25, so random masks "
                           "land near it by construction: this metric alone does not separate a method from "
                           "chance; shared_iou does)"),
        Metric("shared_iou", chance=0.1, bar=0.8,
               description="IoU of the weights both masks keep with the planted shared weights (the shared units' "
                           "inputs): which weights are shared, not only how many (chance: see the random row)"),
        Metric("stability", chance=0.2, bar=0.8, description="mean pairwise Jaccard of task A's masks from 5 seeds"),
        Metric("validated", chance=0.05, bar=0.8,
               description="1 when task A's mask passes validate_mask on held-out inputs against 100 random masks "
                           "of its size per parameter: keeps task A better (sufficient) and its ablation spares task B "
                           "more (specific), each at p < 0.05"),
    ),
    cases=_cases,
    build=_build,
    methods={"learn-mask": _learn_mask, "random": _random},
    score=_score,
    baselines=frozenset({"random"}),
    order=132,
))
