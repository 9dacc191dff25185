"""Two-task continual-learning problems on the digits (issue #15): the tasks and the network.

The digits at their native 8×8 (the zoo's 16×16 digits, every second pixel: 64 inputs) and an MLP
``64 → 64 → ReLU → 10`` (`continual_mlp`) to train on task A, then task B (the known-task-weights
game trains it with `seethrough.weights.train_sequential` and caches the runs with `cached`):

- ``"permuted"`` (domain-incremental, one head): task A is the digits, task B the same digits with
  their pixels permuted by a fixed permutation of ``seed``; both use the 10 classes.
- ``"class-incremental"`` (one head over 10 classes): task A is digits 0–4, task B digits 5–9, and the
  model is never told which task an input belongs to. Regularisation penalties are known to fail here
  (van de Ven and Tolias 2019): the head learns to answer 5–9 for everything.

Tasks train on the zoo's train split and are scored on its held-out test split.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seethrough.core import InputError

from ._seeding import generator, materialise
from .data import digits16

__all__ = ["SETTINGS", "continual_mlp", "digits_tasks"]

SETTINGS = ("permuted", "class-incremental")


def _pixels(x: Tensor) -> Tensor:
    return x[:, 0, ::2, ::2].reshape(len(x), -1).contiguous()


def digits_tasks(seed: int, setting: str) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, Tensor]]]:
    """``(train tasks, test tasks)``: two ``(inputs (n, 64), labels)`` pairs each, for ``setting`` (`SETTINGS`)."""
    if setting not in SETTINGS:
        raise InputError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}.")
    splits = []
    for split in ("train", "test"):
        x, y = digits16(split)
        splits.append((_pixels(x), y))
    if setting == "permuted":
        perm = torch.randperm(64, generator=generator(seed, "permutation"))
        return tuple([(x, y), (x[:, perm], y)] for x, y in splits)  # type: ignore[return-value]  # two lists
    return tuple([(x[y < 5], y[y < 5]), (x[y >= 5], y[y >= 5])] for x, y in splits)  # type: ignore[return-value]


def continual_mlp(seed: int) -> nn.Module:
    """The untrained MLP ``64 → 64 → ReLU → 10`` of ``seed`` (initialised without touching the global RNG)."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return materialise(model, seed)
