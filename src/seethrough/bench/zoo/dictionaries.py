"""Synthetic activations built from a known sparse dictionary: the answer key of the SAE game.

``n_features`` true directions (random unit vectors in ``d`` dimensions) fire independently with
Zipf-distributed probabilities ``p_i = min(1, c / i^a)`` (``c`` set so that the mean number of
active features per row is ``mean_l0``), with magnitudes uniform in [0.5, 1.5]; a row is the sum
of its active directions times their magnitudes, plus small isotropic noise. Generated in about a
second from the seed (no cache needed: nothing is trained).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seethrough.core import InputError

from ._seeding import generator

__all__ = ["SparseDictionaryData", "sparse_dictionary_data", "zipf_probabilities"]


@dataclass(frozen=True, eq=False)
class SparseDictionaryData:
    """The activations and their answer key."""

    activations: Tensor  # (n_samples, d)
    codes: Tensor  # (n_samples, n_features): the true magnitude of each feature in each row (0 = off)
    dictionary: Tensor  # (n_features, d), unit-norm rows
    probabilities: Tensor  # (n_features,): each feature's firing probability


def zipf_probabilities(n_features: int, mean_l0: float, exponent: float) -> Tensor:
    """``p_i = min(1, c / i^exponent)`` for i = 1..n_features, with ``Σ p_i = mean_l0`` (bisection on c)."""
    if not 0 < mean_l0 < n_features:
        raise InputError(f"mean_l0 must be in (0, n_features = {n_features}), got {mean_l0}.")
    base = torch.arange(1, n_features + 1, dtype=torch.float64) ** -exponent
    low, high = 0.0, float(n_features ** exponent) * 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if float((mid * base).clamp(max=1.0).sum()) < mean_l0 else (low, mid)
    return (low * base).clamp(max=1.0)


def sparse_dictionary_data(seed: int, *, n_features: int = 512, d: int = 64, mean_l0: float = 8.0,
                           exponent: float = 1.0, n_samples: int = 32768, noise: float = 0.01) -> SparseDictionaryData:
    """Activations ``codes @ dictionary + noise`` with a known dictionary and known sparse codes.

    Example:
        >>> data = sparse_dictionary_data(0, n_features=64, d=16, mean_l0=5.0, n_samples=2000)
        >>> tuple(data.activations.shape), round(float((data.codes > 0).sum(1).float().mean()), 0)
        ((2000, 16), 5.0)
    """
    dictionary = torch.randn(n_features, d, generator=generator(seed, "dictionary"))
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    probabilities = zipf_probabilities(n_features, mean_l0, exponent).float()
    rng = generator(seed, "codes")
    fires = torch.rand(n_samples, n_features, generator=rng) < probabilities
    magnitudes = 0.5 + torch.rand(n_samples, n_features, generator=rng)
    codes = torch.where(fires, magnitudes, torch.zeros(()))
    activations = codes @ dictionary + noise * torch.randn(n_samples, d, generator=generator(seed, "noise"))
    return SparseDictionaryData(activations, codes, dictionary, probabilities)
