"""Game: lottery tickets with a planted sparse teacher (Weights / frivolous weights: lottery tickets).

Each case is a random sparse teacher MLP that labels Gaussian data (`bench.zoo.lottery`), and a dense
student to prune. Iterative magnitude pruning with rewinding (`weights.lottery_ticket`: 25% of the
remaining weights per round, 12 rounds, rewound to step 20 of 600) runs once per case and is cached by
config through the zoo cache. The ticket is the round at ≤ 20% density with the best *validation*
accuracy; it is scored on the *test* split against the dense network (within 1 point) and two
controls trained identically: the same mask on a random re-initialisation, and the
mask shuffled within each layer on the rewound weights. Support: at the round nearest the teacher's
density, the inputs with any kept first-layer weight against the teacher's inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...weights import lottery_ticket, reinitialised, shuffled_masks, train_sparse
from ..zoo import derive_seed
from ..zoo.cache import cached
from ..zoo.lottery import SparseTeacher, sparse_teacher, student_mlp
from .base import Game, Metric, register

__all__ = ["LotteryCase", "LotteryAnswer", "support_scores"]

#: The game's teachers are zoo seeds 2000 + seed. Zoo seeds 0-4 were looked at while setting the recipe
#: and the selection rule below. Seeds 1000-1002 were scored once with an earlier rule (the sparsest round
#: within 1 point of dense on validation): it picked the edge of the curve, where the test gap is noisy
#: (mean gap 0.015, failing; it also failed dev seed 3 by 0.021), so the rule changed on the dev seeds'
#: evidence and the game moved to seeds it had never run (docs/weights.md).
MODEL_SEED_OFFSET = 2000
#: The densest ticket the game accepts, and the accuracy it may lose against the dense network.
MAX_DENSITY, TOLERANCE = 0.2, 0.01
RECIPE = {"rounds": 12, "rate": 0.25, "rewind_step": 20, "steps": 600, "lr": 3e-3, "batch_size": 128}


@dataclass(frozen=True, eq=False)
class LotteryCase:
    """The planted teacher and the cached IMP run: test accuracies and supports (``record``, JSON)."""

    teacher: SparseTeacher
    record: dict[str, Any]


@dataclass(frozen=True)
class LotteryAnswer:
    """A method's sparse network: test accuracy, density, input support at the teacher's density (None: not
    measured), and whether it is the ticket itself (scored against both controls)."""

    accuracy: float
    density: float
    support: tuple[int, ...] | None
    ticket: bool = False


def support_scores(support: tuple[int, ...], truth: Tensor) -> tuple[float, float]:
    """(recall, precision) of an input support against the teacher's inputs.

    Example:
        >>> support_scores((0, 1, 5), torch.tensor([1, 5, 7, 9]))
        (0.5, 0.6666666666666666)
    """
    found, planted = set(support), set(truth.tolist())
    hit = len(found & planted)
    return hit / len(planted), (hit / len(found) if found else 0.0)


def _support(mask: Mapping[str, Tensor]) -> list[int]:
    return torch.nonzero(mask["0.weight"].any(0)).flatten().tolist()


def _test_accuracy(model: torch.nn.Module, teacher: SparseTeacher) -> float:
    x, y = teacher.test
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _run(teacher: SparseTeacher, seed: int, model: torch.nn.Module) -> dict[str, Any]:
    """IMP with rewinding, the ticket and both controls on the test split; ``model`` receives the trained ticket."""
    r = RECIPE
    train = dict(steps=r["steps"], lr=r["lr"], batch_size=r["batch_size"])
    ticket = lottery_ticket(teacher.student, *teacher.train, rounds=r["rounds"], rate=r["rate"],
                            rewind_step=r["rewind_step"], heldout=teacher.validation, **train)
    eligible = [i for i, d in enumerate(ticket.density) if d <= MAX_DENSITY]
    chosen = max(eligible, key=lambda i: (ticket.accuracy[i], -i))  # best validation accuracy (ties: denser)
    mask = ticket.masks[chosen]
    dense = train_sparse(teacher.student, {}, *teacher.train, **train)
    trained = train_sparse(ticket.ticket(teacher.student, chosen), mask, *teacher.train, **train)
    reinit = train_sparse(reinitialised(teacher.student, seed=derive_seed(seed, "reinit")), mask, *teacher.train,
                          **train)
    shuffled = train_sparse(ticket.ticket(teacher.student, 0), shuffled_masks(mask, seed=derive_seed(seed, "shuffle")),
                            *teacher.train, **train)
    at_teacher = min(range(len(ticket.density)), key=lambda i: abs(ticket.density[i] - teacher.teacher_density))
    model.load_state_dict(trained.state_dict())
    return {"dense": _test_accuracy(dense, teacher), "ticket": _test_accuracy(trained, teacher),
            "reinit": _test_accuracy(reinit, teacher), "shuffled": _test_accuracy(shuffled, teacher),
            "density": ticket.density[chosen], "round": chosen,
            "validation_accuracy": list(ticket.accuracy), "densities": list(ticket.density),
            "teacher_round": at_teacher, "teacher_round_density": ticket.density[at_teacher],
            "support": _support(ticket.masks[at_teacher]),
            "shuffled_support": _support(shuffled_masks(ticket.masks[at_teacher],
                                                        seed=derive_seed(seed, "shuffle-support")))}


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "model_seed": MODEL_SEED_OFFSET + seed}]


def _build(case: Mapping[str, Any]) -> LotteryCase:
    teacher = sparse_teacher(case["model_seed"])
    d_in, width = teacher.student[0].weight.shape[1], teacher.student[0].weight.shape[0]
    n_classes = teacher.student[2].weight.shape[0]
    config = {"model_seed": case["model_seed"], "recipe": RECIPE, "max_density": MAX_DENSITY, "tolerance": TOLERANCE,
              "version": 2}
    _, record = cached("lottery-imp", config, lambda: student_mlp(d_in, width, n_classes),
                       lambda model: _run(teacher, case["model_seed"], model))
    return LotteryCase(teacher, record)


def _imp(case: LotteryCase, generator: torch.Generator) -> LotteryAnswer:
    r = case.record
    return LotteryAnswer(r["ticket"], r["density"], tuple(r["support"]), ticket=True)


def _reinit(case: LotteryCase, generator: torch.Generator) -> LotteryAnswer:
    return LotteryAnswer(case.record["reinit"], case.record["density"], None)


def _shuffled(case: LotteryCase, generator: torch.Generator) -> LotteryAnswer:
    return LotteryAnswer(case.record["shuffled"], case.record["density"], tuple(case.record["shuffled_support"]))


def _score(answer: LotteryAnswer, case: LotteryCase) -> dict[str, float]:
    r = case.record
    out = {"accuracy_gap": r["dense"] - answer.accuracy, "density": answer.density}
    if answer.support is not None:
        out["support_recall"], out["support_precision"] = support_scores(answer.support, case.teacher.support)
    if answer.ticket:
        out["margin_over_reinit"] = r["ticket"] - r["reinit"]
        out["margin_over_shuffled"] = r["ticket"] - r["shuffled"]
    return out


GAME = register(Game(
    name="lottery-tickets",
    item="Weights / frivolous weights (lottery tickets)",
    description=("A random sparse teacher MLP (8 of 32 Gaussian inputs, 16 hidden units reading 3 inputs each, 4 "
                 "classes) labels the data; a dense 32-64-4 student is pruned by iterative magnitude pruning with "
                 "rewinding (25% of the remaining weights per round, rewound to step 20 of 600; cached). The ticket "
                 "is the round at <= 20% density with the best validation accuracy, scored on test data (teachers "
                 "2000+; 0-4 calibrated the recipe) against the dense network and two controls trained identically (same mask, random "
                 "re-initialisation; layer-wise shuffled mask, rewound weights). Support recall: at the round "
                 "nearest the teacher's density, the inputs with a kept first-layer weight against the teacher's."),
    metrics=(
        Metric("accuracy_gap", chance=0.6, bar=TOLERANCE, higher_is_better=False,
               description="dense test accuracy minus the sparse network's (bar: within 1 point; chance: a network "
                           "at chance, about dense 0.85 - 0.25)"),
        Metric("density", chance=1.0, bar=MAX_DENSITY, higher_is_better=False,
               description="fraction of the student's weights the ticket keeps (bar: at most 20%)"),
        Metric("margin_over_reinit", chance=0.0, bar=TOLERANCE,
               description="ticket test accuracy minus the same mask trained from a random re-initialisation "
                           "(bar: at least the game's 1-point tolerance, CI above 0)"),
        Metric("margin_over_shuffled", chance=0.0, bar=TOLERANCE,
               description="ticket test accuracy minus the layer-wise shuffled mask on the rewound weights "
                           "(bar: at least the game's 1-point tolerance, CI above 0)"),
        Metric("support_recall", chance=0.25, bar=0.8,
               description="fraction of the teacher's inputs with a kept first-layer weight, at the round nearest "
                           "the teacher's density (chance: see the shuffled-masks row)"),
        Metric("support_precision", chance=0.25, bar=0.8,
               description="fraction of the inputs the ticket keeps that the teacher reads (8 of 32: 0.25 by chance)"),
    ),
    cases=_cases,
    build=_build,
    methods={"imp-rewind": _imp, "random-reinit": _reinit, "shuffled-masks": _shuffled},
    score=_score,
    baselines=frozenset({"random-reinit", "shuffled-masks"}),
    order=133,
))
