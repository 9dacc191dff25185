"""Synthetic activations built from a known sparse dictionary: the answer key of the SAE game.

``n_features`` true directions (random unit vectors in ``d`` dimensions) fire independently with
Zipf-distributed probabilities ``p_i = min(1, c / i^a)`` (``c`` set so that the mean number of
active features per row is ``mean_l0``), with magnitudes uniform in [0.5, 1.5]; a row is the sum
of its active directions times their magnitudes, plus small isotropic noise. Generated in about a
second from the seed (no cache needed: nothing is trained). `hierarchical_dictionary_data` adds
the structure real features have: parents that gate mutually exclusive children (a child fires only
with its parent, one child at a time) and low-rank correlations between the other features' firing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seethrough.core import InputError

from ._seeding import generator

__all__ = ["SparseDictionaryData", "sparse_dictionary_data", "zipf_probabilities", "hierarchical_dictionary_data"]


@dataclass(frozen=True, eq=False)
class SparseDictionaryData:
    """The activations and their answer key."""

    activations: Tensor  # (n_samples, d)
    codes: Tensor  # (n_samples, n_features): the true magnitude of each feature in each row (0 = off)
    dictionary: Tensor  # (n_features, d), unit-norm rows
    probabilities: Tensor  # (n_features,): each feature's firing probability (marginal)
    parent_of: Tensor | None = None  # (n_features,): each child's parent feature, -1 for the others


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


def hierarchical_dictionary_data(seed: int, *, n_features: int = 128, d: int = 64, mean_l0: float = 8.0,
                                 exponent: float = 1.0, n_parents: int = 8, n_children: int = 3,
                                 parent_probability: float = 0.1, rank: int = 4, correlation: float = 1.0,
                                 n_samples: int = 32768, noise: float = 0.01) -> SparseDictionaryData:
    """Like `sparse_dictionary_data`, with a hierarchy and low-rank correlated firing.

    Features ``0 .. n_parents − 1`` are parents, each firing with ``parent_probability``; when a
    parent fires exactly one of its ``n_children`` children (the next features, uniformly chosen)
    fires too, so children are mutually exclusive and never fire without their parent. The other
    features fire with Zipf base probabilities (their expected count makes up ``mean_l0``) shifted
    on the logit scale by ``correlation · (z @ U)``, ``z ~ N(0, I_rank)`` per row and ``U`` a fixed
    ``(n_other, rank)`` Gaussian matrix scaled by ``1/√rank``: a low-rank correlation of firing.
    ``parent_of`` says which feature is each child's parent (−1 elsewhere).

    Example:
        >>> data = hierarchical_dictionary_data(0, n_features=40, d=16, mean_l0=4.0, n_parents=2, n_samples=2000)
        >>> children = data.parent_of >= 0
        >>> bool(((data.codes[:, children] > 0).sum(1) <= (data.codes[:, :2] > 0).sum(1)).all())
        True
    """
    n_hier = n_parents * (1 + n_children)
    if n_hier >= n_features or rank < 1 or not 0 < parent_probability <= 1:
        raise InputError(f"need n_parents·(1 + n_children) = {n_hier} < n_features = {n_features}, rank ≥ 1 and "
                         f"parent_probability in (0, 1]; got rank={rank}, parent_probability={parent_probability}.")
    n_other = n_features - n_hier
    other_l0 = mean_l0 - 2 * n_parents * parent_probability
    if not 0 < other_l0 < n_other:
        raise InputError(f"mean_l0 = {mean_l0} leaves {other_l0:.2f} for the {n_other} other features; raise it.")
    dictionary = torch.randn(n_features, d, generator=generator(seed, "dictionary"))
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    rng = generator(seed, "codes")
    base = zipf_probabilities(n_other, other_l0, exponent).float().clamp(1e-6, 1 - 1e-6)
    mixing = torch.randn(n_other, rank, generator=generator(seed, "correlations")) / rank ** 0.5
    shift = correlation * torch.randn(n_samples, rank, generator=rng) @ mixing.T
    other = torch.rand(n_samples, n_other, generator=rng) < torch.sigmoid(torch.logit(base) + shift)
    parents = torch.rand(n_samples, n_parents, generator=rng) < parent_probability
    choice = torch.randint(0, n_children, (n_samples, n_parents), generator=rng)
    children = torch.nn.functional.one_hot(choice, n_children).bool() & parents[:, :, None]
    fires = torch.cat([parents, children.reshape(n_samples, -1), other], dim=1)
    magnitudes = 0.5 + torch.rand(n_samples, n_features, generator=rng)
    codes = torch.where(fires, magnitudes, torch.zeros(()))
    activations = codes @ dictionary + noise * torch.randn(n_samples, d, generator=generator(seed, "noise"))
    parent_of = torch.full((n_features,), -1, dtype=torch.long)
    parent_of[n_parents:n_hier] = torch.arange(n_parents).repeat_interleave(n_children)
    return SparseDictionaryData(activations, codes, dictionary, fires.float().mean(0), parent_of)
