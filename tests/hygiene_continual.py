"""Hygiene cases for issue #15 item 1: sequential training (EWC/SI/MAS), PackNet and unit allocation.

`train_sequential` and `allocate` train a deep copy and return it; the model passed in must be left
exactly as found (no ``.grad`` on it, flags and modes as they were, the global RNG untouched: training
runs under a forked, seeded RNG). `unit_allocation` reads the model through torch.func in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyMLP, vectors

from seethrough import weights
from seethrough.bench.games import weights as weights_game
from seethrough.bench.zoo import continual as continual_zoo


def _tasks(x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x, torch.arange(len(x)) % 3), (x, (torch.arange(len(x)) + 1) % 3)]


def _trained(result: Any) -> torch.Tensor:
    parts = [torch.tensor(result.accuracy).flatten(), *(p.detach().flatten() for p in result.model.parameters())]
    return torch.cat(parts)


def _sequential(m: torch.nn.Module, x: torch.Tensor, penalty: str) -> torch.Tensor:
    r = weights.train_sequential(m, _tasks(x), penalty=penalty, epochs=2, batch_size=2)
    return torch.cat([_trained(r), *(s.flatten() for i in r.importances + r.si for s in i.scores.values())])


def _allocated(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    r = weights.allocate(m, _tasks(x), epochs=2, retrain_epochs=1, batch_size=2)
    r.task_model(0)
    return torch.cat([_trained(r), *(v.flatten().float() for masks in r.masks for v in masks.values())])


def _units(m: torch.nn.Module, x: torch.Tensor, method: str) -> torch.Tensor:
    return torch.cat(weights.unit_allocation(m, _tasks(x), "fc1", method=method).scores)


CASES: list[Case] = [
    *[Case(f"train_sequential ({penalty})", weights.train_sequential, TinyMLP, vectors,
           lambda m, x, penalty=penalty: _sequential(m, x, penalty),
           invalid=(lambda m, x: weights.train_sequential(m, _tasks(x), penalty="l2"),
                    lambda m, x: weights.train_sequential(m, [(x, torch.arange(len(x)) + 7)])))
      for penalty in ("ewc", "si", "mas", "random")],
    Case("train_sequential (train mode, heads)", weights.train_sequential, TinyMLP, vectors,
         lambda m, x: _trained(weights.train_sequential(m, [(x, torch.arange(len(x)) % 2), (x, torch.zeros(len(x), dtype=torch.long))],
                                                        heads=[(0, 2), (2, 3)], epochs=1)), train_mode=True),
    Case("allocate", weights.allocate, TinyMLP, vectors, _allocated,
         invalid=(lambda m, x: weights.allocate(m, _tasks(x), prune=2.0),)),
    Case("allocate (train mode)", weights.allocate, TinyMLP, vectors, _allocated, train_mode=True),
    *[Case(f"unit_allocation ({method})", weights.unit_allocation, TinyMLP, vectors,
           lambda m, x, method=method: _units(m, x, method),
           invalid=(lambda m, x: weights.unit_allocation(m, _tasks(x), "act"),))
      for method in ("ablation", "fisher")],
]

EXEMPT: dict[Any, str] = {
    weights.SequentialTraining: "a result dataclass (its model is the trained copy)",
    weights.Allocation: "a result dataclass (task_model returns a copy; exercised by the allocate cases)",
    weights.UnitAllocation: "a result dataclass",
    weights.quadratic_penalty: "a formula on parameter dicts; takes no model",
    weights_game.ContinualCase: "a game case (a seed and a setting)",
    weights_game.ForgettingAnswer: "a game answer (accuracy matrices)",
    weights_game.continual_accuracy: "trains and caches a new zoo model; takes no model",
    continual_zoo.continual_mlp: "builds a new model",
    continual_zoo.digits_tasks: "loads data; takes no model",
}
