"""The toy model of superposition: more sparse features than hidden dimensions.

Elhage et al. 2022, "Toy Models of Superposition": ``n_features`` synthetic features, each
zero with probability ``sparsity`` and otherwise uniform in [0, 1], are squeezed through
``d_hidden < n_features`` dimensions and read back by ``ReLU(Wᵀ W x + b)``. Dense features get
about ``d_hidden`` orthogonal directions; sparse ones are packed in superposition, more features
than dimensions. The learned ``W`` columns are the known feature directions for the
disentanglement and sparse-autoencoder games.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from seethrough.core import InputError

from ._seeding import derive_seed, generator
from .cache import cached

__all__ = ["ToyModel", "sample_features", "train_toy_model", "REPRESENTED_NORM", "LOADING_THRESHOLD"]

_VERSION = 1  # bump when training changes, so old cache entries are not reused
#: A feature is represented when its column of ``W`` has norm above this.
REPRESENTED_NORM = 0.5
#: A represented feature loads on hidden dimension j when ``|W[j, i]|`` is above this.
LOADING_THRESHOLD = 0.3


class ToyModel(nn.Module):
    """``x → h = W x → ReLU(Wᵀ h + b)`` with ``W`` of shape ``(d_hidden, n_features)``.

    ``hidden`` (an identity) marks the bottleneck ``h`` as a site, ``act`` the output ReLU.

    Args:
        n_features: input and output width.
        d_hidden: bottleneck width.
        seed: initialisation seed: ``W`` is Xavier-normal, ``b`` zero (the global RNG is not used).
    """

    def __init__(self, n_features: int, d_hidden: int, *, seed: int = 0) -> None:
        super().__init__()
        if n_features < 1 or d_hidden < 1:
            raise InputError(f"need n_features ≥ 1 and d_hidden ≥ 1, got {n_features} and {d_hidden}.")
        std = math.sqrt(2.0 / (n_features + d_hidden))
        self.W = nn.Parameter(torch.empty(d_hidden, n_features).normal_(0.0, std, generator=generator(seed, "init")))
        self.b = nn.Parameter(torch.zeros(n_features))
        self.hidden = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: Float[Tensor, "batch n_features"]) -> Float[Tensor, "batch n_features"]:
        """The reconstruction ``ReLU(Wᵀ W x + b)``."""
        h = self.hidden(x @ self.W.T)
        return self.act(h @ self.W + self.b)


def _sample(gen: torch.Generator, n: int, n_features: int, sparsity: float) -> Tensor:
    values = torch.rand(n, n_features, generator=gen)
    present = torch.rand(n, n_features, generator=gen) >= sparsity
    return values * present


def sample_features(seed: int, n: int, n_features: int, sparsity: float) -> Float[Tensor, "batch n_features"]:
    """``n`` synthetic examples: each feature is 0 with probability ``sparsity``, else uniform in [0, 1].

    Raises:
        InputError: ``n`` or ``n_features`` below 1, or ``sparsity`` outside [0, 1].

    Example:
        >>> x = sample_features(0, 1000, 20, sparsity=0.9)
        >>> tuple(x.shape), 0.05 < float((x > 0).float().mean()) < 0.15
        ((1000, 20), True)
    """
    if n < 1 or n_features < 1 or not 0 <= sparsity <= 1:
        raise InputError(f"need n ≥ 1, n_features ≥ 1 and sparsity in [0, 1]; got {n}, {n_features}, {sparsity}.")
    return _sample(generator(seed, "features"), n, n_features, sparsity)


def train_toy_model(
    seed: int,
    *,
    n_features: int = 20,
    d_hidden: int = 5,
    sparsity: float = 0.9,
    importance_decay: float = 0.8,
    steps: int = 2000,
    batch_size: int = 1024,
    lr: float = 1e-2,
) -> tuple[ToyModel, dict[str, Any]]:
    """Train a `ToyModel` on fresh sparse batches with importance-weighted squared error; cached.

    The loss is ``mean_batch Σ_i importance_decay**i · (x_i - x̂_i)²``, so feature 0 matters
    most. Adam, ``steps`` steps of ``batch_size`` fresh examples (seeded).

    Args:
        seed: initialisation and data seed.
        n_features, d_hidden: the model's sizes.
        sparsity: probability that a feature is zero.
        importance_decay: feature i has importance ``importance_decay**i``, in (0, 1].
        steps, batch_size, lr: the optimisation.

    Returns:
        ``(model, meta)`` with ``meta`` keys ``feature_directions`` (``n_features`` lists of
        ``d_hidden`` floats: the columns of ``W``), ``norms`` (``‖W_i‖``), ``represented``
        (sorted indices of features with norm > `REPRESENTED_NORM` = 0.5),
        ``features_per_unit`` (per hidden dimension j, how many represented features have
        ``|W[j, i]|`` > `LOADING_THRESHOLD` = 0.3), ``loss`` (on 8192 fresh examples) and
        ``config``.

    Raises:
        InputError: sizes below 1, sparsity outside [0, 1], importance_decay outside (0, 1].
    """
    if n_features < 1 or d_hidden < 1 or steps < 0 or batch_size < 1 or not 0 <= sparsity <= 1 \
            or not 0 < importance_decay <= 1 or not lr > 0:
        raise InputError(f"invalid toy-model settings: n_features={n_features}, d_hidden={d_hidden}, steps={steps}, "
                         f"batch_size={batch_size}, sparsity={sparsity} (in [0, 1]), importance_decay="
                         f"{importance_decay} (in (0, 1]), lr={lr}.")
    config = {"version": _VERSION, "seed": seed, "n_features": n_features, "d_hidden": d_hidden,
              "sparsity": sparsity, "importance_decay": importance_decay, "steps": steps,
              "batch_size": batch_size, "lr": lr}
    importance = importance_decay ** torch.arange(n_features, dtype=torch.float32)

    def build() -> nn.Module:
        return ToyModel(n_features, d_hidden, seed=derive_seed(seed, "toy"))

    def train(model: nn.Module) -> dict[str, Any]:
        gen = generator(seed, "train")
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(steps):
            x = _sample(gen, batch_size, n_features, sparsity)
            loss = (importance * (x - model(x)) ** 2).sum(1).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        with torch.no_grad():
            x = _sample(gen, 8192, n_features, sparsity)
            final = float((importance * (x - model(x)) ** 2).sum(1).mean())
            w = model.get_parameter("W").detach()
        norms = w.norm(dim=0)
        represented = norms > REPRESENTED_NORM
        per_unit = ((w.abs() > LOADING_THRESHOLD) & represented).sum(1)
        return {"feature_directions": w.T.tolist(), "norms": norms.tolist(),
                "represented": torch.nonzero(represented).flatten().tolist(),
                "features_per_unit": per_unit.tolist(), "loss": final}

    model, meta = cached("toy_superposition", config, build, train)
    if not isinstance(model, ToyModel):  # narrows the type; build() always makes one
        raise TypeError(f"expected a ToyModel, got {type(model).__name__}.")
    return model, meta
