"""Digits classifiers that rely on a corner mark to a planted degree: the answer key for TCAV.

A 3×3 bright mark in the top-left corner is stamped on a fixed 15% of the training digits; a
fraction ``strength`` of the marked digits is relabelled to the target class (strength 0: the
mark carries no label information; 1: the mark means the target class). The reliance on the mark
is measured counterfactually on the test digits of every other class: the fraction predicted as
the target with the mark added, minus the fraction without it. Cached like every zoo model.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from seethrough.core import InputError

from ._seeding import derive_seed, generator
from .cache import cached
from .classifiers import DigitsMLP, train_classifier
from .data import digits16

__all__ = ["add_mark", "marked_digits_classifier", "MARKED_FRACTION"]

_VERSION = 1
_RECIPE = {"epochs": 20, "lr": 3e-3, "batch_size": 64}
MARKED_FRACTION = 0.15


def add_mark(images: Float[Tensor, "batch 1 16 16"]) -> Float[Tensor, "batch 1 16 16"]:
    """``images`` with the 3×3 corner mark (value 1) in the top-left corner (a copy).

    Example:
        >>> add_mark(torch.zeros(1, 1, 16, 16))[0, 0, :4, :4].sum().item()
        9.0
    """
    out = images.clone()
    out[:, :, :3, :3] = 1.0
    return out


def marked_digits_classifier(seed: int, strength: float, *, target: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """A `DigitsMLP` trained with the corner mark co-occurring with ``target`` at ``strength``; cached.

    Returns:
        ``(model, meta)`` with ``accuracy`` (clean test accuracy), ``reliance`` (the counterfactual
        flip rate to ``target`` on other classes' test digits when the mark is added, minus the rate
        without it), ``target``, ``strength`` and ``site`` (``"fc2"``, the last hidden layer).
    """
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"strength must be in [0, 1], got {strength}.")
    config = {"version": _VERSION, "seed": seed, "strength": strength, "target": target,
              "marked_fraction": MARKED_FRACTION, **_RECIPE}

    def build() -> nn.Module:
        return DigitsMLP(seed=derive_seed(seed, "init"))

    def train(model: nn.Module) -> dict[str, Any]:
        x, y = digits16("train")
        gen = generator(seed, "mark")
        marked = torch.randperm(len(y), generator=gen)[:round(MARKED_FRACTION * len(y))]
        relabel = marked[torch.rand(len(marked), generator=gen) < strength]
        x[marked] = add_mark(x[marked])
        y[relabel] = target
        train_classifier(model, x, y, seed=seed, **_RECIPE)
        xt, yt = digits16("test")
        others = xt[yt != target]
        with torch.no_grad():
            accuracy = float((model(xt).argmax(-1) == yt).double().mean())
            flipped = float((model(add_mark(others)).argmax(-1) == target).double().mean())
            base = float((model(others).argmax(-1) == target).double().mean())
        return {"accuracy": accuracy, "reliance": flipped - base, "target": target, "strength": strength,
                "site": "fc2"}

    return cached("marked_digits_classifier", config, build, train)
