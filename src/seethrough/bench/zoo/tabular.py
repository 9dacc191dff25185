"""Synthetic tabular data with a known set of relevant features, and an MLP trained on it (cached).

``k`` of ``d`` standard-normal features decide the label through a known rule (a signed linear
score plus one pairwise interaction, thresholded at zero); the others are noise the label ignores.
The answer key of the attribution-faithfulness game: a faithful attribution ranks the relevant
features first (chance ``k / d``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int64
from torch import Tensor, nn

from seethrough.core import InputError

from ._seeding import derive_seed, generator, materialise
from .cache import cached

__all__ = ["TabularMLP", "tabular_task", "trained_tabular_mlp"]

_VERSION = 1
_RECIPE: dict[str, Any] = {"hidden": 64, "steps": 400, "lr": 1e-2, "n_train": 2000, "n_test": 500}


class TabularMLP(nn.Module):
    """``(batch, n_features)`` → ``fc1`` → ``act1`` → ``fc2`` → ``act2`` → ``head`` (2 logits)."""

    def __init__(self, n_features: int, hidden: int = 64, *, seed: int = 0) -> None:
        super().__init__()
        with torch.device("meta"):  # built without numbers, then initialised from the seed (never the global RNG)
            self.fc1 = nn.Linear(n_features, hidden)
            self.act1 = nn.ReLU()
            self.fc2 = nn.Linear(hidden, hidden)
            self.act2 = nn.ReLU()
            self.head = nn.Linear(hidden, 2)
        materialise(self, seed)

    def forward(self, x: Float[Tensor, "batch n_features"]) -> Float[Tensor, "batch 2"]:
        """Class logits."""
        return self.head(self.act2(self.fc2(self.act1(self.fc1(x)))))


def tabular_task(seed: int, n: int, *, n_features: int = 20, n_relevant: int = 5, split: str = "train"
                 ) -> tuple[Float[Tensor, "batch n_features"], Int64[Tensor, " batch"], dict[str, Any]]:
    """``n`` examples of the seeded rule and its answer key.

    The rule (fixed by ``seed``): relevant features ``S`` (``n_relevant`` of ``n_features``),
    weights ``w_j = ±U(1, 2)``, score ``Σ_{j∈S} w_j x_j + x_{S0} x_{S1}``, label ``score > 0``.
    ``split`` picks an independent sample (``"train"`` or ``"test"``).

    Returns:
        ``(x, y, rule)`` with ``rule`` keys ``relevant`` (sorted), ``weights`` (per relevant feature).

    Raises:
        InputError: ``n_relevant`` not in 2..n_features, or ``n`` < 1.

    Example:
        >>> x, y, rule = tabular_task(0, 4)
        >>> tuple(x.shape), len(rule["relevant"])
        ((4, 20), 5)
    """
    if not 2 <= n_relevant <= n_features or n < 1:
        raise InputError(f"need 2 <= n_relevant <= n_features and n >= 1, got n_relevant={n_relevant}, "
                         f"n_features={n_features}, n={n}.")
    rng = np.random.default_rng(derive_seed(seed, "tabular-rule"))
    relevant = sorted(int(j) for j in rng.choice(n_features, size=n_relevant, replace=False))
    weights = (rng.uniform(1.0, 2.0, n_relevant) * rng.choice([-1.0, 1.0], n_relevant)).tolist()
    x = torch.randn(n, n_features, generator=generator(seed, f"tabular-{split}"))
    score = x[:, relevant] @ torch.tensor(weights) + x[:, relevant[0]] * x[:, relevant[1]]
    return x, (score > 0).long(), {"relevant": relevant, "weights": weights}


def trained_tabular_mlp(seed: int, *, n_features: int = 20, n_relevant: int = 5) -> tuple[nn.Module, dict[str, Any]]:
    """A `TabularMLP` trained (full-batch Adam) on `tabular_task`'s rule, cached by config.

    Returns:
        ``(model, meta)`` with ``meta`` keys ``relevant``, ``weights``, ``test_accuracy`` and ``config``.
    """
    config = {"version": _VERSION, "seed": seed, "n_features": n_features, "n_relevant": n_relevant, **_RECIPE}

    def build() -> nn.Module:
        return TabularMLP(n_features, config["hidden"], seed=derive_seed(seed, "init"))

    def train(model: nn.Module) -> dict[str, Any]:
        x, y, rule = tabular_task(seed, config["n_train"], n_features=n_features, n_relevant=n_relevant)
        optimiser = torch.optim.Adam(model.parameters(), lr=config["lr"])
        model.train()
        for _ in range(config["steps"]):
            loss = F.cross_entropy(model(x), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        model.eval()
        xt, yt, _ = tabular_task(seed, config["n_test"], n_features=n_features, n_relevant=n_relevant, split="test")
        with torch.no_grad():
            accuracy = float((model(xt).argmax(1) == yt).double().mean())
        return {**rule, "test_accuracy": accuracy}

    return cached("tabular_mlp", config, build, train)
