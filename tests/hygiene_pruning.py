"""Hygiene cases for issue #15 items 2-4: pruning, lottery tickets, mask validation, joined by hygiene.py.

Every method reads the model (or trains a deep copy of it) and must leave it exactly as found: no
``.grad``, no flag or mode changed, the global RNG untouched (training forks it). The lottery-tickets
game's own helpers are listed in EXEMPT.
"""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyCNN, TinyMLP, images, vectors

from seethrough import weights
from seethrough.bench.games import lottery as lottery_game
from seethrough.bench.games import masks as masks_game
from seethrough.bench.zoo import lottery as lottery_zoo


def _labels(x: Any) -> torch.Tensor:
    return torch.arange(len(x)) % 3


def _scores(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().abs() for n, p in m.named_parameters()}


def _masks(result: Any) -> torch.Tensor:
    return torch.cat([v.flatten().float() for v in result.masks.values()])


def _prune_and_copies(m: torch.nn.Module, x: Any, **options: Any) -> torch.Tensor:
    result = weights.prune(m, _scores(m), sparsity=0.5, **options)
    result.apply(m), result.ablate(m)
    return _masks(result)


def _ticket(m: torch.nn.Module, x: Any) -> torch.Tensor:
    t = weights.lottery_ticket(m, x, _labels(x), rounds=2, rate=0.5, steps=4, batch_size=2, rewind_step=1)
    t.ticket(m), t.trained(m)
    return torch.tensor(t.accuracy)


def _validate(m: torch.nn.Module, x: Any) -> torch.Tensor:
    mask = weights.prune(m, _scores(m), sparsity=0.5).masks
    v = weights.validate_mask(m, mask, {"a": (x, weights.correct(_labels(x)))}, task="a", n_controls=3)
    return torch.tensor([v.applied[0], v.ablated[0]])


CASES: list[Case] = [
    Case("prune (global weights)", weights.prune, TinyMLP, vectors, _prune_and_copies, runs_forward=False,
         invalid=(lambda m, x: weights.prune(m, _scores(m), sparsity=2.0),
                  lambda m, x: weights.prune(m, _scores(m), sparsity=0.5, structure="heads"))),
    Case("prune (layer units, cnn)", weights.prune, TinyCNN, images,
         lambda m, x: _prune_and_copies(m, x, scope="layer", structure="units"), runs_forward=False),
    Case("prunable_parameters", weights.prunable_parameters, TinyMLP, vectors,
         lambda m, x: torch.tensor(len(weights.prunable_parameters(m))), runs_forward=False),
    Case("sparsity_curve", weights.sparsity_curve, TinyMLP, vectors,
         lambda m, x: torch.tensor(weights.sparsity_curve(m, x, _labels(x), _scores(m)).accuracy),
         invalid=(lambda m, x: weights.sparsity_curve(m, x, _labels(x)[:2], _scores(m)),)),
    Case("lottery_ticket", weights.lottery_ticket, TinyMLP, vectors, _ticket,
         invalid=(lambda m, x: weights.lottery_ticket(m, x, _labels(x), rewind_step=99, steps=3),)),
    Case("lottery_ticket (train mode)", weights.lottery_ticket, TinyMLP, vectors, _ticket, train_mode=True),
    Case("train_sparse", weights.train_sparse, TinyMLP, vectors,
         lambda m, x: weights.train_sparse(m, {"fc1.weight": torch.ones(8, 4, dtype=torch.bool)}, x, _labels(x),
                                           steps=3)(x),
         invalid=(lambda m, x: weights.train_sparse(m, {"fc1.weight": torch.ones(2, 2)}, x, _labels(x)),)),
    Case("reinitialised", weights.reinitialised, TinyMLP, vectors,
         lambda m, x: weights.reinitialised(m, seed=1)(x)),
    Case("validate_mask", weights.validate_mask, TinyMLP, vectors, _validate,
         invalid=(lambda m, x: weights.validate_mask(m, {"fc1.weight": torch.ones(8, 4, dtype=torch.bool)},
                                                     {"a": (x, weights.correct(_labels(x)))}, task="b"),)),
    Case("validate_mask (cnn, train mode)", weights.validate_mask, TinyCNN, images, _validate, train_mode=True),
]

EXEMPT: dict[Any, str] = {
    weights.PruningMask: "a result dataclass (apply/ablate return copies; exercised by the prune cases)",
    weights.SparsityCurve: "a result dataclass",
    weights.LotteryTicket: "a result dataclass (ticket/trained return copies; exercised by the lottery_ticket cases)",
    weights.MaskValidation: "a result dataclass",
    weights.shuffled_masks: "permutes boolean masks; takes no model",
    weights.correct: "builds a metric from labels; takes no model",
    masks_game.mask_validated: "validates a planted case's own network's mask (validate_mask reads it through "
                               "functional_call); never edits it",
    lottery_game.LotteryCase: "a planted case (the teacher and the cached IMP record)",
    lottery_game.LotteryAnswer: "a game answer (accuracy, density, support)",
    lottery_game.support_scores: "compares index sets; takes no model",
    lottery_zoo.sparse_teacher: "builds a new model and data",
    lottery_zoo.SparseTeacher: "a planted case (teacher weights, data, the student's initialisation)",
    lottery_zoo.student_mlp: "builds a new model",
}
